// herd dashboard: one /api/state read, then server-sent events; children one page at a time.
"use strict";

const PAGE = 50;
const state = { summary: null, trees: {}, offset: 0, total: 0, refreshDue: false };
const $ = (id) => document.getElementById(id);
const short = (id) => (id ? String(id).slice(0, 12) : "-");
const shown = (v) => (v === null || v === undefined ? "-" : String(v));

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function uptime(startedAt) {
  if (!startedAt) return "-";
  const s = Math.max(0, Date.now() / 1000 - startedAt);
  if (s < 60) return s.toFixed(0) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function notice(text) {
  const box = $("notice");
  box.hidden = !text;
  box.textContent = text || "";
}

function token() {
  return $("token").value || sessionStorage.getItem("herd-token") || "";
}

async function act(action, supervisor, id) {
  const headers = { "Content-Type": "application/json" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  const response = await fetch("/api/actions/" + action, {
    method: "POST", headers, body: JSON.stringify({ supervisor, id }),
  });
  const body = await response.json();
  notice(response.ok ? action + ": " + body.result : action + " refused: " + body.error);
}

function actionButton(row, label, action, supervisor, id) {
  const button = document.createElement("button");
  button.textContent = label;
  button.dataset.action = action;
  button.addEventListener("click", () => act(action, supervisor, id));
  row.lastChild.appendChild(button);
}

// ------------------------------------------------------------------ overview
function renderSummary() {
  const summary = state.summary;
  if (!summary) return;
  $("totals").textContent = summary.children + " children, " +
    summary.nodes.filter((n) => n.alive).length + "/" + summary.nodes.length + " nodes alive";
  const nodes = $("nodes").tBodies[0];
  nodes.replaceChildren();
  const selected = $("supervisor").value;
  for (const node of summary.nodes) {
    const row = nodes.insertRow();
    row.dataset.node = node.node_id;
    cell(row, short(node.node_id) + (node.head ? " (head)" : ""));
    cell(row, shown(node.region));
    cell(row, node.alive ? "alive" : "dead", node.alive ? "alive" : "dead");
    cell(row, String(node.children));
    cell(row, "");
    const sup = summary.supervisors.find((s) => s.name === selected && s.kind === "dynamic");
    if (node.alive && sup) actionButton(row, "drain " + sup.name, "drain", sup.name, node.node_id);
  }
  const options = $("supervisor");
  const names = summary.supervisors.map((s) => s.name);
  const have = Array.from(options.options).map((o) => o.value).slice(1);
  if (names.join() !== have.join()) {
    const keep = options.value;
    options.replaceChildren(new Option("every supervisor", ""));
    for (const name of names) options.add(new Option(name, name));
    options.value = names.includes(keep) ? keep : "";
  }
  renderTrees();
}

function treeList(children) {
  const ul = document.createElement("ul");
  for (const child of children) {
    const li = document.createElement("li");
    li.textContent = child.id + " — " + child.status + " on " + short(child.node_id) +
      (child.pid ? " pid " + child.pid : "");
    if (child.children && child.children.length) li.appendChild(treeList(child.children));
    ul.appendChild(li);
  }
  return ul;
}

function renderTrees() {
  const box = $("trees");
  box.replaceChildren();
  for (const sup of state.summary.supervisors) {
    const div = document.createElement("div");
    div.className = "tree";
    const head = document.createElement("div");
    head.className = "sup";
    head.textContent = sup.kind + " supervisor " + sup.name + ": " +
      (sup.stopped ? "stopped: " + sup.stopped : sup.children + " children") +
      (sup.unavailable ? " (not answering: " + sup.unavailable + ")" : "");
    div.appendChild(head);
    if (sup.kind === "dynamic") {
      const ul = document.createElement("ul");
      for (const [node, count] of Object.entries(sup.by_node)) {
        const li = document.createElement("li");
        li.textContent = "node " + short(node) + ": " + count;
        ul.appendChild(li);
      }
      div.appendChild(ul);
    } else if (state.trees[sup.name]) {
      div.appendChild(treeList(state.trees[sup.name]));
    }
    box.appendChild(div);
  }
}

async function refreshChildren() {
  const params = new URLSearchParams({
    supervisor: $("supervisor").value, q: $("search").value,
    offset: String(state.offset), limit: String(PAGE),
  });
  const page = await (await fetch("/api/children?" + params)).json();
  state.total = page.total;
  const body = $("children").tBodies[0];
  body.replaceChildren();
  for (const child of page.rows) {
    const row = body.insertRow();
    row.dataset.child = child.supervisor + "/" + child.id;
    cell(row, child.supervisor);
    const idCell = cell(row, "");
    const link = document.createElement("a");
    link.href = "#child/" + encodeURIComponent(child.supervisor) + "/" + encodeURIComponent(child.id);
    link.textContent = child.id;
    idCell.appendChild(link);
    cell(row, child.kind);
    cell(row, child.status);
    cell(row, short(child.node_id)).className = "node";
    cell(row, shown(child.region));
    cell(row, shown(child.epoch));
    cell(row, shown(child.incarnation));
    cell(row, shown(child.restarts));
    cell(row, shown(child.failovers));
    cell(row, uptime(child.started_at));
    cell(row, "");
    actionButton(row, "restart", "restart", child.supervisor, child.id);
    actionButton(row, "terminate", "terminate", child.supervisor, child.id);
  }
  const last = Math.min(state.offset + PAGE, state.total);
  $("pageinfo").textContent = (state.total ? state.offset + 1 : 0) + "–" + last + " of " + state.total;
}

// at most one page read in flight, and one more after it when something changed meanwhile
let refreshing = false;
async function scheduleRefresh() {
  if (refreshing) { state.refreshDue = true; return; }
  refreshing = true;
  try { await refreshChildren(); } finally {
    refreshing = false;
    if (state.refreshDue) { state.refreshDue = false; setTimeout(scheduleRefresh, 200); }
  }
}

function describe(e) {
  const who = e.count > 1 ? e.count + " children of " + e.supervisor + " (" + e.children.join(", ") + ", …)"
    : e.child_id ? e.supervisor + "/" + e.child_id : "";
  switch (e.kind) {
    case "node_down": return "node " + short(e.node_id) + " (" + shown(e.region) + ") down";
    case "node_up": return "node " + short(e.node_id) + " (" + shown(e.region) + ") up";
    case "failed_over": return who + " failed over " + short(e.from_node) + " → " + short(e.node_id);
    case "moved": return who + " moved " + short(e.from_node) + " → " + short(e.node_id);
    case "restarted": return who + " restarted on " + short(e.node_id);
    case "started": return who + " started on " + short(e.node_id);
    case "removed": return who + " removed";
    default: return e.kind + (e.detail ? ": " + e.detail : "") + (who ? " " + who : "");
  }
}

function addEvent(e) {
  const li = document.createElement("li");
  li.className = e.kind;
  li.textContent = new Date(e.at * 1000).toLocaleTimeString() + "  " + describe(e);
  const list = $("timeline");
  list.prepend(li);
  while (list.children.length > 200) list.lastChild.remove();
}

function renderPanels(panels) {
  const box = $("panels");
  box.replaceChildren();
  for (const panel of Object.values(panels)) {
    const h = document.createElement("h2");
    h.textContent = panel.title;
    box.appendChild(h);
    if (panel.error) { const p = document.createElement("p"); p.textContent = panel.error; box.appendChild(p); }
    const table = document.createElement("table");
    const head = table.createTHead().insertRow();
    for (const column of panel.columns) { const th = document.createElement("th"); th.textContent = column; head.appendChild(th); }
    const body = table.createTBody();
    for (const row of panel.rows) {
      const tr = body.insertRow();
      for (const column of panel.columns) cell(tr, shown(row[column]));
    }
    box.appendChild(table);
  }
}

function setStatus(status) {
  const box = $("connection");
  box.className = status.connected ? "ok" : "bad";
  box.textContent = status.connected ? "live" : "cluster unreachable, reconnecting: " + status.detail;
}

// ------------------------------------------------------------------ child page
async function showChild(supervisor, id) {
  const response = await fetch("/api/child?" + new URLSearchParams({ supervisor, id }));
  const child = await response.json();
  $("childtitle").textContent = supervisor + "/" + id;
  const body = $("childfields").tBodies[0];
  body.replaceChildren();
  const fields = response.ok ? child : { error: child.error };
  for (const [key, value] of Object.entries(fields)) {
    if (key === "history") continue;
    const row = body.insertRow();
    cell(row, key);
    cell(row, key.endsWith("_at") && value ? new Date(value * 1000).toLocaleString() : shown(value));
  }
  const history = $("childhistory");
  history.replaceChildren();
  for (const e of (child.history || []).slice().reverse()) {
    const li = document.createElement("li");
    li.textContent = new Date(e.at * 1000).toLocaleTimeString() + "  " + describe(e);
    history.appendChild(li);
  }
}

function route() {
  const match = location.hash.match(/^#child\/([^/]+)\/(.+)$/);
  $("overview").hidden = Boolean(match);
  $("childpage").hidden = !match;
  if (match) showChild(decodeURIComponent(match[1]), decodeURIComponent(match[2]));
}

// ------------------------------------------------------------------ start
async function start() {
  const initial = await (await fetch("/api/state")).json();
  state.summary = initial.summary;
  state.trees = initial.trees;
  setStatus(initial.status);
  renderSummary();
  renderPanels(initial.panels);
  for (const e of initial.events) addEvent(e);
  if (!initial.actions) notice("actions are off: the dashboard runs without the cluster token");
  await refreshChildren();
  const stream = new EventSource("/api/stream");
  stream.addEventListener("summary", (m) => { state.summary = JSON.parse(m.data); renderSummary(); scheduleRefresh(); });
  stream.addEventListener("event", (m) => { addEvent(JSON.parse(m.data)); scheduleRefresh(); });
  stream.addEventListener("panels", (m) => renderPanels(JSON.parse(m.data)));
  stream.addEventListener("trees", (m) => { state.trees = JSON.parse(m.data); renderTrees(); });
  stream.addEventListener("status", (m) => setStatus(JSON.parse(m.data)));
  stream.onerror = () => setStatus({ connected: false, detail: "the dashboard server does not answer" });
  $("supervisor").addEventListener("change", () => { state.offset = 0; renderSummary(); scheduleRefresh(); });
  $("search").addEventListener("input", () => { state.offset = 0; scheduleRefresh(); });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); scheduleRefresh(); });
  $("next").addEventListener("click", () => { if (state.offset + PAGE < state.total) { state.offset += PAGE; scheduleRefresh(); } });
  $("token").addEventListener("change", () => sessionStorage.setItem("herd-token", $("token").value));
  window.addEventListener("hashchange", route);
  route();
}

start();
