// The event table, the data-source indicator, counters and the detail view. Rendering is
// batched per animation frame and the table is bounded, so 100 events/s stays smooth.

const MAX_ROWS = 500;

const INDICATOR_TEXT = {
  "supabase:live": "Supabase Realtime",
  "websocket:live": "WebSocket (legacy)",
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
  offline: "Offline, buffering",
};

export class FeedView {
  constructor(root) {
    this.rows = root.querySelector("#event-rows");
    this.indicator = root.querySelector("#data-source");
    this.notice = root.querySelector("#notice");
    this.rolloutState = root.querySelector("#rollout-state");
    this.counters = {
      received: root.querySelector("#count-received"),
      gaps: root.querySelector("#count-gaps"),
      duplicates: root.querySelector("#count-duplicates"),
    };
    this.filters = {
      criticality: root.querySelector("#filter-criticality"),
      type: root.querySelector("#filter-type"),
      source: root.querySelector("#filter-source"),
    };
    this.pauseButton = root.querySelector("#pause");
    this.dialog = root.querySelector("#event-detail");
    this.events = []; // newest first, bounded
    this.queue = [];
    this.paused = false;
    this.frame = null;

    for (const input of Object.values(this.filters)) {
      input.addEventListener("input", () => this.renderAll());
    }
    this.pauseButton.addEventListener("click", () => this.togglePause());
    this.rows.addEventListener("click", (event) => {
      const row = event.target.closest("tr[data-seq]");
      if (row) this.showDetail(Number(row.dataset.seq));
    });
    root.querySelector("#event-detail-close").addEventListener("click", () => this.dialog.close());
  }

  setIndicator(transport, state) {
    const key = state === "live" ? `${transport}:live` : state;
    this.indicator.dataset.state = state;
    this.indicator.dataset.transport = transport;
    this.indicator.className = `data-source data-source--${state === "live" ? transport : state}`;
    this.indicator.textContent = INDICATOR_TEXT[key] ?? state;
  }

  tell(message) {
    this.notice.textContent = message;
    this.notice.hidden = !message;
  }

  // The standing line about the rollout (the kill switch); empty hides it.
  setRolloutState(message) {
    this.rolloutState.textContent = message;
    this.rolloutState.hidden = !message;
  }

  setCounters({ received, gaps, duplicates }) {
    this.counters.received.textContent = String(received);
    this.counters.gaps.textContent = String(gaps);
    this.counters.duplicates.textContent = String(duplicates);
  }

  add(events) {
    this.queue.push(...events);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  // Each seq is shown once: the page's start state (its buffer and its own snapshot)
  // overlaps, and a batch may hold the same event twice; only new seqs become rows.
  flush() {
    this.frame = null;
    if (!this.queue.length) return;
    const seen = new Set(this.events.map((event) => event.seq));
    const incoming = [];
    for (const event of this.queue) {
      if (seen.has(event.seq)) continue;
      seen.add(event.seq);
      incoming.push(event);
    }
    this.queue = [];
    if (!incoming.length) return;
    incoming.sort((a, b) => b.seq - a.seq);
    const top = this.events.length ? this.events[0].seq : 0;
    this.events = [...incoming, ...this.events].sort((a, b) => b.seq - a.seq).slice(0, MAX_ROWS);
    if (this.paused) return;
    if (incoming[incoming.length - 1].seq > top && this.rows.children.length) {
      this.prepend(incoming);
    } else {
      this.renderAll();
    }
  }

  // The common case, new events on top: add their rows and trim the bottom, instead of
  // rebuilding the table every frame.
  prepend(incoming) {
    const fragment = document.createDocumentFragment();
    for (const event of incoming) if (this.matches(event)) fragment.append(rowFor(event));
    this.rows.prepend(fragment);
    while (this.rows.children.length > MAX_ROWS) this.rows.lastElementChild.remove();
  }

  togglePause() {
    this.paused = !this.paused;
    this.pauseButton.textContent = this.paused ? "Resume" : "Pause";
    this.pauseButton.setAttribute("aria-pressed", String(this.paused));
    if (!this.paused) this.renderAll();
  }

  matches(event) {
    const criticality = this.filters.criticality.value;
    const type = this.filters.type.value.trim().toLowerCase();
    const source = this.filters.source.value.trim().toLowerCase();
    return (
      (!criticality || event.criticality === criticality) &&
      (!type || event.event_type.includes(type)) &&
      (!source || event.source.toLowerCase().includes(source))
    );
  }

  renderAll() {
    const fragment = document.createDocumentFragment();
    for (const event of this.events) {
      if (this.matches(event)) fragment.append(rowFor(event));
    }
    this.rows.replaceChildren(fragment);
  }

  showDetail(seq) {
    const event = this.events.find((item) => item.seq === seq);
    if (!event) return;
    this.dialog.querySelector("#event-detail-title").textContent = `#${event.seq} ${event.event_type}`;
    this.dialog.querySelector("#event-detail-body").textContent = JSON.stringify(event, null, 2);
    this.dialog.showModal();
  }
}

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function rowFor(event) {
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
    cell(String(event.received_at).replace("T", " ").slice(0, 23)),
    crit,
    cell(event.event_type),
    cell(event.source),
    cell(JSON.stringify(event.payload), "payload"),
  );
  return tr;
}
