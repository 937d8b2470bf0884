// The legacy live feed on the first dashboard page: follows /ws/events/, resumes after the
// highest seq it has shown on every reconnect, and shows each event once, newest first.

const MAX_ROWS = 200;
const rows = document.getElementById("event-rows");
const indicator = document.getElementById("connection");
const receivedCount = document.getElementById("received-count");

let highestSeq = JSON.parse(document.getElementById("latest-seq").textContent) || 0;
const shown = new Set([...rows.querySelectorAll("tr[data-seq]")].map((tr) => Number(tr.dataset.seq)));
let received = 0;
let retryDelay = 500;

function setState(state, text) {
  indicator.dataset.state = state;
  indicator.className = `connection connection--${state}`;
  indicator.textContent = text;
}

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function render(event) {
  if (shown.has(event.seq)) return;
  shown.add(event.seq);
  received += 1;
  receivedCount.textContent = String(received);
  rows.querySelector("tr.empty")?.remove();

  const tr = document.createElement("tr");
  tr.dataset.seq = String(event.seq);
  tr.className = `crit crit--${event.criticality}`;
  const badge = document.createElement("span");
  badge.className = `badge badge--${event.criticality}`;
  badge.textContent = event.criticality;
  const crit = document.createElement("td");
  crit.append(badge);
  tr.append(
    cell(String(event.seq)),
    cell(event.received_at),
    crit,
    cell(event.event_type),
    cell(event.source),
    cell(JSON.stringify(event.payload), "payload"),
  );
  // Newest first: insert before the first row with a lower seq.
  const before = [...rows.children].find((row) => Number(row.dataset.seq) < event.seq);
  rows.insertBefore(tr, before ?? null);
  while (rows.children.length > MAX_ROWS) {
    const last = rows.lastElementChild;
    shown.delete(Number(last.dataset.seq));
    last.remove();
  }
  if (event.seq > highestSeq) highestSeq = event.seq;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws/events/?after=${highestSeq}`);
  socket.addEventListener("open", () => {
    retryDelay = 500;
    setState("live", "WebSocket (legacy): live");
  });
  socket.addEventListener("message", (message) => {
    const data = JSON.parse(message.data);
    if (data.type === "event") render(data.event);
  });
  socket.addEventListener("close", () => {
    const state = navigator.onLine ? "reconnecting" : "offline";
    setState(state, navigator.onLine ? "WebSocket (legacy): reconnecting…" : "Offline");
    setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 10_000);
  });
}

connect();
