// Postern admin console: a thin client of the admin REST API (/api/v1).
"use strict";
const $ = (s) => document.querySelector(s);
let tab = "connectors";
let cursor = "";

function token() { return sessionStorage.getItem("postern-admin-token") || ""; }

function status(msg, isError) {
  const el = $("#status");
  el.textContent = msg || "";
  el.className = isError ? "error" : "";
}

async function api(method, path, body, contentType) {
  const opts = { method, headers: { Authorization: "Bearer " + token() } };
  if (body !== undefined) {
    opts.body = body;
    opts.headers["Content-Type"] = contentType || "application/json";
  }
  const resp = await fetch("/api/v1" + path, opts);
  if (resp.status === 204) return null;
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(data.error || resp.status + " " + resp.statusText);
  return data;
}

function cell(v) {
  const td = document.createElement("td");
  if (v instanceof Node) td.appendChild(v);
  else if (Array.isArray(v)) td.textContent = v.join(", ");
  else if (v === undefined || v === null) td.textContent = "";
  else td.textContent = String(v);
  return td;
}

function code(s) { const c = document.createElement("code"); c.textContent = s || ""; return c; }

function online(v) {
  const s = document.createElement("span");
  s.className = v ? "on" : "off";
  s.textContent = v ? "online" : "offline";
  return s;
}

function revokeButton(kind, id) {
  const b = document.createElement("button");
  b.textContent = kind === "relays" ? "Delete" : "Revoke";
  b.onclick = async () => {
    if (!confirm(b.textContent + " " + id + "?")) return;
    try { await api("DELETE", "/" + kind + "/" + encodeURIComponent(id)); load(true); }
    catch (e) { status(e.message, true); }
  };
  return b;
}

const columns = {
  connectors: [["Name", (o) => o.name], ["Network", (o) => o.network], ["State", (o) => online(o.online)],
    ["Enrolled", (o) => o.enrolled ? "yes" : "no"], ["Certificate SHA-256", (o) => code((o.cert_sha256 || [])[0])],
    ["Addresses", (o) => o.addrs], ["Flows", (o) => o.load && o.load.active_flows], ["Version", (o) => o.version],
    ["Last heartbeat", (o) => o.last_heartbeat]],
  resources: [["Name", (o) => o.name], ["Address", (o) => code(o.address)], ["Alias", (o) => o.alias],
    ["Network", (o) => o.network], ["Ports", (o) => o.ports && o.ports.length ? o.ports : "all"], ["Groups", (o) => o.groups]],
  groups: [["Name", (o) => o.name], ["Users", (o) => o.users]],
  users: [["Email", (o) => o.email], ["Source", (o) => o.source], ["Password", (o) => o.has_password ? "set" : ""],
    ["Disabled", (o) => o.disabled ? "yes" : ""]],
  "service-accounts": [["Name", (o) => o.name], ["Groups", (o) => o.groups], ["Keys", (o) => (o.keys || []).map((k) => k.key_id)]],
  relays: [["Name", (o) => o.name], ["State", (o) => online(o.online)], ["UDP", (o) => o.udp_addr], ["TLS", (o) => o.tls_addr],
    ["Last heartbeat", (o) => o.last_heartbeat], ["", (o) => revokeButton("relays", o.id)]],
  devices: [["Device", (o) => o.id], ["Principal", (o) => o.principal_id], ["Name", (o) => o.name], ["OS", (o) => o.os],
    ["Created", (o) => o.created], ["Revoked", (o) => o.revoked ? o.revoked_at : ""], ["", (o) => o.revoked ? "" : revokeButton("devices", o.id)]],
  sessions: [["Session", (o) => o.id], ["Device", (o) => o.device_id], ["Principal", (o) => o.principal_id], ["Method", (o) => o.method],
    ["Expires", (o) => o.expires_at], ["Active", (o) => o.active ? "yes" : "no"], ["", (o) => o.active ? revokeButton("sessions", o.id) : ""]],
  events: [["Received", (o) => o.received_at], ["Connector", (o) => o.connector_id], ["Principal", (o) => o.principal],
    ["Destination", (o) => o.destination + ":" + o.port + "/" + o.protocol], ["Result", (o) => o.result],
    ["Duration ms", (o) => o.duration_ms], ["Bytes up/down", (o) => o.bytes_up + " / " + o.bytes_down]],
  audit: [["When", (o) => o.at], ["Who", (o) => o.actor], ["What", (o) => o.action + " " + o.kind], ["Name", (o) => o.name],
    ["IP", (o) => o.ip || ""], ["Device", (o) => o.device || ""],
    ["Before", (o) => code(o.before ? JSON.stringify(o.before) : "")], ["After", (o) => code(o.after ? JSON.stringify(o.after) : "")]],
};

async function load(reset) {
  if (reset) { cursor = ""; $("#view").textContent = ""; }
  $("#apply").hidden = tab !== "apply";
  $("#more").hidden = true;
  if (tab === "apply") { status(""); return; }
  if (!token()) { status("Enter the admin token.", true); return; }
  try {
    const page = await api("GET", "/" + tab + "?limit=100" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
    let table = $("#view table");
    if (!table) {
      table = document.createElement("table");
      const tr = document.createElement("tr");
      for (const [h] of columns[tab]) { const th = document.createElement("th"); th.textContent = h; tr.appendChild(th); }
      table.appendChild(tr);
      $("#view").appendChild(table);
    }
    for (const o of page.items) {
      const tr = document.createElement("tr");
      for (const [, f] of columns[tab]) tr.appendChild(cell(f(o)));
      table.appendChild(tr);
    }
    cursor = page.next_cursor || "";
    $("#more").hidden = !cursor;
    status(page.items.length || table.rows.length > 1 ? "" : "Nothing here yet.");
  } catch (e) { status(e.message, true); }
}

async function applyYAML(dry) {
  try {
    const plan = await api("POST", "/apply" + (dry ? "?dry_run=true" : ""), $("#yaml").value, "application/yaml");
    const lines = plan.changes.map((c) => ({ create: "+", update: "~", delete: "-" })[c.op] + " " + c.kind + " " + c.name +
      (c.fields && c.fields.length ? " (" + c.fields.join(", ") + ")" : ""));
    $("#plan").textContent = (lines.length ? lines.join("\n") : "No changes.") + (dry ? "\n(dry run: nothing changed)" : "\nApplied at revision " + plan.revision + ".");
    status("");
  } catch (e) { $("#plan").textContent = ""; status(e.message, true); }
}

document.querySelectorAll("#tabs button").forEach((b) => {
  b.onclick = () => {
    tab = b.dataset.tab;
    document.querySelectorAll("#tabs button").forEach((x) => x.classList.toggle("active", x === b));
    load(true);
  };
});
$("#login").onsubmit = (ev) => { ev.preventDefault(); sessionStorage.setItem("postern-admin-token", $("#token").value.trim()); $("#token").value = ""; load(true); };
$("#logout").onclick = () => { sessionStorage.removeItem("postern-admin-token"); load(true); };
$("#more").onclick = () => load(false);
$("#dry").onclick = () => applyYAML(true);
$("#doapply").onclick = () => applyYAML(false);
document.querySelector('#tabs button[data-tab="connectors"]').classList.add("active");
load(true);
