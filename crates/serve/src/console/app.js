// The Seed console: topics with live rates, a live tail, an event's JSON, the
// state browser (entities of a type by status, an entity's history), a publish form.
// Plain browser JavaScript, no build step; the server compiles this file into its binary.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_ROWS = 500;
let token = sessionStorage.getItem("seed-token");
let asking = null;

// Asks for the token once; it is kept in sessionStorage (this tab only).
function askToken() {
  if (!asking) {
    asking = new Promise((resolve) => {
      const dialog = $("token-dialog");
      $("token-form").onsubmit = () => {
        token = $("token-input").value;
        sessionStorage.setItem("seed-token", token);
        asking = null;
        resolve();
      };
      dialog.showModal();
    });
  }
  return asking;
}

async function api(path, options = {}) {
  for (;;) {
    const headers = Object.assign({}, options.headers || {});
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(path, Object.assign({}, options, { headers }));
    if (response.status !== 401) return response;
    await askToken();
  }
}

async function errorText(response) {
  try { return (await response.json()).error; } catch (e) { return response.status + " " + response.statusText; }
}

function setPill(el, text, kind) {
  el.textContent = text;
  el.className = "pill" + (kind ? " " + kind : "");
}

// Topics and their rates, from /v1/stats every two seconds.
const previous = new Map();
async function refreshTopics() {
  try {
    const response = await api("/v1/stats");
    if (!response.ok) throw new Error(await errorText(response));
    const stats = await response.json();
    const now = performance.now();
    const body = $("topics").tBodies[0];
    body.replaceChildren();
    for (const t of stats.topics) {
      const before = previous.get(t.topic);
      const rate = before ? Math.max(0, (t.events - before.events) / ((now - before.at) / 1000)) : 0;
      previous.set(t.topic, { events: t.events, at: now });
      const tr = document.createElement("tr");
      for (const [text, cls] of [[t.topic, ""], [t.events.toLocaleString(), "num"], [rate < 10 ? rate.toFixed(1) : Math.round(rate).toLocaleString(), "num"]]) {
        const td = document.createElement("td");
        td.textContent = text;
        if (cls) td.className = cls;
        tr.append(td);
      }
      tr.onclick = () => { $("tail-pattern").value = t.topic; follow(); };
      body.append(tr);
    }
    $("topics-empty").hidden = stats.topics.length > 0;
    setPill($("server-status"), "connected", "ok");
  } catch (e) {
    setPill($("server-status"), "unreachable", "bad");
  }
}

// The live tail: an event stream read with fetch (EventSource cannot send the token).
let stream = null;
let paused = false;
let held = [];
let lastId = null;

function addRow(event) {
  const li = document.createElement("li");
  li.className = "event-row";
  li.dataset.topic = event.topic;
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = (event.timestamp || "").slice(11, 23);
  const topic = document.createElement("span");
  topic.className = "topic";
  topic.textContent = event.topic;
  const payload = document.createElement("span");
  payload.className = "payload";
  payload.textContent = event.source + ": " + JSON.stringify(event.payload);
  li.append(time, topic, payload);
  li.onclick = () => {
    for (const s of document.querySelectorAll("#tail li.selected")) s.classList.remove("selected");
    li.classList.add("selected");
    const detail = $("detail");
    detail.className = "";
    detail.textContent = JSON.stringify(event, null, 2);
  };
  const tail = $("tail");
  tail.prepend(li);
  while (tail.children.length > MAX_ROWS) tail.lastElementChild.remove();
  $("tail-empty").hidden = true;
}

function onEvent(event) {
  if (paused) {
    held.push(event);
    if (held.length > MAX_ROWS) held.shift();
    $("tail-pause").textContent = "Resume (" + held.length + ")";
  } else {
    addRow(event);
  }
}

async function follow() {
  if (stream) stream.abort();
  const controller = new AbortController();
  stream = controller;
  lastId = null;
  const pattern = $("tail-pattern").value.trim() || ">";
  const status = $("tail-status");
  let delay = 500;
  while (stream === controller) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const response = await api("/v1/subscribe?topic=" + encodeURIComponent(pattern), { headers, signal: controller.signal });
      if (!response.ok) {
        setPill(status, await errorText(response), "bad");
        return;
      }
      await readStream(response, status);
      delay = 500;
    } catch (e) {
      if (controller.signal.aborted) return;
    }
    setPill(status, "reconnecting", "warn");
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 5000);
  }
}

async function readStream(response, status) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let id = null, kind = "message", data = [];
      for (const line of block.split("\n")) {
        if (line === ": listening" || line === ":listening") setPill(status, "live", "ok");
        else if (line.startsWith("id:")) id = line.slice(3).trim();
        else if (line.startsWith("event:")) kind = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) {
        if (id) lastId = id;
        continue;
      }
      if (kind === "error") {
        setPill(status, JSON.parse(data.join("\n")).error, "warn");
        continue;
      }
      if (id) lastId = id;
      onEvent(JSON.parse(data.join("\n")));
    }
  }
}

$("tail-form").onsubmit = (e) => { e.preventDefault(); $("tail").replaceChildren(); follow(); };
$("tail-pause").onclick = () => {
  paused = !paused;
  if (!paused) { for (const ev of held) addRow(ev); held = []; }
  $("tail-pause").textContent = paused ? "Resume (" + held.length + ")" : "Pause";
};
$("tail-clear").onclick = () => { $("tail").replaceChildren(); $("tail-empty").hidden = false; };

$("publish-form").onsubmit = async (e) => {
  e.preventDefault();
  const result = $("publish-result");
  let payload;
  try { payload = JSON.parse($("publish-payload").value); } catch (err) {
    result.className = "bad";
    result.textContent = "The payload is not JSON: " + err.message;
    return;
  }
  const body = JSON.stringify({ payload, source: $("publish-source").value });
  const topic = encodeURIComponent($("publish-topic").value.trim());
  const response = await api("/v1/topics/" + topic + "/events", { method: "POST", headers: { "Content-Type": "application/json" }, body });
  if (response.ok) {
    const event = await response.json();
    result.className = "ok";
    result.textContent = "Published " + event.id + " at " + event.cursor;
    refreshTopics();
  } else {
    result.className = "bad";
    result.textContent = await errorText(response);
  }
};

// Work groups from /v1/groups every two seconds; a click shows the group's dead letters.
let openGroup = null;
async function refreshGroups() {
  const response = await api("/v1/groups");
  if (!response.ok) return;
  const groups = await response.json();
  const body = $("groups").tBodies[0];
  body.replaceChildren();
  for (const g of groups) {
    const tr = document.createElement("tr");
    tr.title = g.pattern + (g.exclusive ? "; exclusive" + (g.active ? ", active: " + g.active : "") : "")
      + (g.members.length ? "; members: " + g.members.join(", ") : "");
    for (const [text, cls] of [[g.name + (g.exclusive ? " (exclusive)" : ""), ""], [String(g.members.length), "num"], [String(g.in_flight), "num"], [String(g.waiting), "num"], [String(g.dead_lettered), "num"]]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    tr.onclick = () => { openGroup = g.name; showDeadLetters(); };
    body.append(tr);
  }
  $("groups-empty").hidden = groups.length > 0;
}

// The dead letters of the open group not redriven yet, each with a Redrive button.
async function showDeadLetters() {
  const list = $("dead-letters");
  const group = openGroup;
  const response = await api("/v1/events?topic=" + encodeURIComponent("dead." + group));
  if (!response.ok) { list.replaceChildren(); return; }
  const events = ndjson(await response.text());
  const redriven = new Set(events.filter((e) => e.payload.redriven).map((e) => e.payload.redriven));
  const letters = events.filter((e) => e.payload.event && !redriven.has(e.id));
  list.replaceChildren();
  for (const letter of letters.slice(-20)) {
    const li = document.createElement("li");
    const what = document.createElement("span");
    what.textContent = letter.payload.topic + " \u00d7" + letter.payload.deliveries + ": " + letter.payload.error;
    what.onclick = () => { $("detail").className = ""; $("detail").textContent = JSON.stringify(letter, null, 2); };
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Redrive";
    button.onclick = async () => {
      const r = await api("/v1/groups/" + encodeURIComponent(group) + "/redrive", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ id: letter.id }),
      });
      if (r.ok) showDeadLetters(); else what.textContent = await errorText(r);
      refreshGroups();
    };
    li.append(what, button);
    list.append(li);
  }
  if (!letters.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "No dead letters in group " + group + ".";
    list.append(li);
  }
}

// The state browser: the entities of a type (by status) from /v1/state/{type},
// and an entity's kept versions in the detail panel on click.
function ndjson(text) {
  return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
}

async function listStates() {
  const kind = $("states-type").value.trim();
  const status = $("states-status").value;
  const empty = $("states-empty");
  const body = $("states").tBodies[0];
  body.replaceChildren();
  const query = status ? "?status=" + encodeURIComponent(status) : "";
  const response = await api("/v1/state/" + encodeURIComponent(kind) + query);
  if (!response.ok) {
    empty.hidden = false;
    empty.textContent = await errorText(response);
    return;
  }
  const states = ndjson(await response.text());
  states.sort((a, b) => a.entity_id.localeCompare(b.entity_id));
  for (const s of states.slice(0, MAX_ROWS)) {
    const tr = document.createElement("tr");
    for (const [text, cls] of [[s.entity_id, ""], [s.status, ""], [String(s.version), "num"], [s.updated_by, ""]]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    tr.onclick = () => showHistory(kind, s.entity_id);
    body.append(tr);
  }
  empty.hidden = states.length > 0;
  empty.textContent = "No " + (status ? status + " " : "") + "entities of type " + kind + ".";
}

async function showHistory(kind, id) {
  const detail = $("detail");
  const response = await api("/v1/state/" + encodeURIComponent(kind) + "/" + encodeURIComponent(id) + "/history");
  detail.className = "";
  detail.textContent = response.ok
    ? kind + "/" + id + ", oldest first:\n" + ndjson(await response.text()).map((s) => JSON.stringify(s, null, 2)).join("\n")
    : await errorText(response);
}

$("states-form").onsubmit = (e) => { e.preventDefault(); listStates(); };

const theme = localStorage.getItem("seed-theme") ||
  (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
document.documentElement.dataset.theme = theme;
$("theme").onclick = () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  localStorage.setItem("seed-theme", next);
};

refreshTopics();
setInterval(refreshTopics, 2000);
refreshGroups();
setInterval(refreshGroups, 2000);
follow();
