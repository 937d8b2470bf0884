// The dashboard: one feed with the same contract on both transports (events in seq order,
// each exactly once, backfilled on every (re)connect), a visible data source, graceful
// fallback to the legacy path, and live switching on rollout control messages.

import "uplot/dist/uPlot.min.css";
import { Charts } from "./charts.js";
import { LegacyTransport } from "./legacy.js";
import { SeqMerger } from "./merger.js";
import { LocalBuffer } from "./store.js";
import { SupabaseTransport } from "./supabase.js";
import { Telemetry } from "./telemetry.js";
import { TokenSource } from "./tokens.js";
import { FeedView } from "./ui.js";

const MAX_CATCH_UP = 5000;
const config = JSON.parse(document.getElementById("dashboard-config").textContent);
const view = new FeedView(document);
const buffer = new LocalBuffer(config.userId, { synthetic: config.synthetic.show });
const telemetry = new Telemetry({ csrfToken: config.csrfToken });
const charts = new Charts({
  rateEl: document.getElementById("chart-rate"),
  latencyEl: document.getElementById("chart-latency"),
});
const tokens = config.supabase ? new TokenSource(config.supabase) : null;

// What this browser showed last time is on screen before the network answers. A buffer
// from beyond the log's newest seq belongs to a log that was reset: it is dropped.
const stored = buffer.load();
const saved = stored.contiguous <= config.latestSeq ? stored : { contiguous: 0, events: [] };
// The start state is the buffer and the page's own snapshot (every event with
// initialAfter < seq <= latestSeq). They overlap; the view shows each seq once.
view.add([...saved.events, ...config.initialEvents]);
view.flush();
performance.mark("feed:first-render");
charts.seed(config.rate, config.latestSeq);

let received = 0;
let backfills = 0; // backfills that answered (each (re)subscription makes one)
let transport = null;
let backfilling = null;
let choice = config.choice;
let killed = config.rollout.killed;
// Where the feed resumes: after the snapshot when the buffer reaches it (or there is no
// buffer); otherwise after the buffer, catching up through the snapshot, whose events
// are already shown and so are passed over once rather than shown again.
const joined = saved.contiguous === 0 || saved.contiguous >= config.initialAfter;
const startAt = joined
  ? config.latestSeq
  : Math.max(saved.contiguous, config.latestSeq - MAX_CATCH_UP);

const merger = new SeqMerger({
  contiguous: startAt,
  onDeliver: (events) => {
    received += events.length;
    view.add(events);
    charts.add(events);
    saveBuffer();
    updateCounters();
  },
  onGap: () => backfillNow(),
});
if (!joined) merger.preload(config.initialEvents.map((event) => event.seq));
saveBuffer(); // the start state, so that the next load knows where this one began

function saveBuffer() {
  buffer.save(() => ({
    contiguous: merger.contiguous,
    events: newestFirst([...view.queue, ...view.events]),
  }));
}

function newestFirst(events) {
  const bySeq = new Map(events.map((event) => [event.seq, event]));
  return [...bySeq.values()].sort((a, b) => b.seq - a.seq);
}

function updateCounters() {
  view.setCounters({ received, gaps: merger.gapsFilled, duplicates: merger.duplicates });
}

function onLiveEvents(events) {
  // Latency needs the server clock; until the page has measured its offset it records none.
  if (telemetry.offsetKnown) {
    const now = telemetry.serverNow();
    for (const event of events) {
      if (event.skip) continue; // a synthetic event's marker carries no times
      const latency = now - Date.parse(event.received_at);
      telemetry.latency(latency);
      charts.addLatency(latency);
    }
  }
  merger.offer(events);
  updateCounters();
}

async function backfillNow() {
  if (backfilling) return backfilling;
  const active = transport;
  backfilling = (async () => {
    try {
      const { events, upTo } = await active.backfill(merger.contiguous);
      if (active === transport) merger.settle(events, upTo);
      backfills += 1;
    } catch (error) {
      telemetry.count("errors");
      setTimeout(() => backfillNow(), 1000);
    } finally {
      backfilling = null;
      updateCounters();
    }
  })();
  return backfilling;
}

function onStatus(name, state) {
  if (transport?.name !== name) return;
  view.setIndicator(name, navigator.onLine ? state : "offline");
  if (state === "live") telemetry.count("connects");
}

const TRANSPORT_NAMES = { supabase: "Supabase Realtime", websocket: "the legacy WebSocket feed" };

// The standing line about the kill switch: staff read the reason, end users plain words.
function showKillSwitch(killed, reason) {
  if (!killed) {
    view.setRolloutState("");
  } else if (config.staff) {
    view.setRolloutState(`Kill switch on: everyone is on the legacy WebSocket feed${reason ? ` (${reason})` : ""}.`);
  } else {
    view.setRolloutState(config.rollout.plainKillMessage);
  }
}

// Why the rollout moved this page, in words fit for whoever reads it.
function rolloutNotice(name, reason) {
  const because = config.staff && reason ? `: ${reason}` : "";
  return `The rollout moved this page to ${TRANSPORT_NAMES[name]}${because}.`;
}

function switchTo(name, notice) {
  if (name === "supabase" && !config.supabase) {
    name = "websocket";
    notice = "Supabase Realtime is not configured here; using the legacy WebSocket feed.";
  }
  if (transport?.name === name) return;
  telemetry.flush(transport?.name);
  transport?.stop();
  const common = {
    onEvents: onLiveEvents,
    onControl: onControl,
    onBackfill: () => backfillNow(),
    onPosition: (seq) => {
      merger.advance(seq);
      saveBuffer();
    },
    synthetic: config.synthetic,
  };
  if (name === "supabase") {
    transport = new SupabaseTransport({
      ...common,
      config: config.supabase,
      tokens,
      serverNow: () => telemetry.serverNow(),
      onStatus: (state) => onStatus("supabase", state),
      onFailure: (reason) => {
        telemetry.count("connect_failures");
        telemetry.flush("supabase");
        switchTo("websocket", `Supabase Realtime failed (${reason}); switched to the legacy WebSocket feed.`);
      },
    });
  } else {
    transport = new LegacyTransport({ ...common, onStatus: (state) => onStatus("websocket", state) });
  }
  telemetry.transport = name;
  view.setIndicator(name, "connecting");
  view.tell(notice ?? "");
  transport.start(() => merger.contiguous);
}

// Re-read this user's transport. `cause` "user_choice": the user changed their own
// choice on /settings/ (told to their legacy pages; a Supabase page notices it by its
// poll, when the choice it reads differs from the one it knew).
async function transportRecheck({ cause } = {}) {
  try {
    const response = await fetch("/api/transport", { credentials: "same-origin", cache: "no-store" });
    const body = await response.json();
    const reason = body.reason; // given to staff only; control messages carry none
    const ownChoice = cause === "user_choice" || (body.choice !== undefined && body.choice !== choice);
    if (body.choice !== undefined) choice = body.choice;
    if (body.killed !== undefined && (body.killed !== killed || !body.killed || reason)) {
      killed = body.killed;
      showKillSwitch(killed, reason);
    }
    if (!body.transport) return;
    if (body.transport !== transport?.name) {
      switchTo(
        body.transport,
        ownChoice
          ? `Your choice on the Settings page (${body.choice}): this page switched to ${TRANSPORT_NAMES[body.transport]}.`
          : rolloutNotice(body.transport, reason),
      );
    } else if (ownChoice) {
      view.tell(
        body.killed
          ? `Your choice on the Settings page (${body.choice}) is saved; the kill switch keeps this page on ${TRANSPORT_NAMES[body.transport]} for now.`
          : `Your choice on the Settings page (${body.choice}) is saved; this page already uses ${TRANSPORT_NAMES[body.transport]}.`,
      );
    }
  } catch {
    telemetry.count("errors");
  }
}

// A page whose Realtime path silently loses messages cannot hear a broadcast either, so
// the Supabase path also asks for its transport every few seconds (a kill switch reaches
// every page within the 10 s the rollout promises).
setInterval(() => {
  if (transport?.name === "supabase") transportRecheck();
}, 5000);

// A control message is a hint, never an order: the page re-reads its transport from the
// server (`GET /api/transport`, answered for this signed-in user) and acts on that answer
// alone. The Supabase control topic is private and only the server may send on it, but a
// page that obeyed the message itself would obey whoever managed to send one.
// `switch_transport` comes from the kill switch, `transport_changed` from a stage change
// or (with `cause: "user_choice"`) from the user's own choice.
async function onControl(control) {
  if (control?.action === "switch_transport" || control?.action === "transport_changed") {
    await transportRecheck({ cause: control.cause === "user_choice" ? "user_choice" : undefined });
  }
}

window.addEventListener("offline", () => view.setIndicator(transport.name, "offline"));
window.addEventListener("online", () => {
  view.setIndicator(transport.name, "reconnecting");
  transport.reconnectNow();
  backfillNow();
});

showKillSwitch(killed, config.rollout.reason);
telemetry.measureOffset();
setInterval(() => telemetry.measureOffset(), 60_000);
switchTo(config.transport);
updateCounters();

// For people and tests looking at a live page.
window.monitorFeed = {
  get transport() { return transport?.name; },
  get contiguous() { return merger.contiguous; },
  stats: () => ({
    received,
    backfills,
    gapsFilled: merger.gapsFilled,
    duplicates: merger.duplicates,
    // Broadcast messages replayed to the Supabase path on its (re)joins.
    replayed: transport?.name === "supabase" ? transport.replayed : 0,
  }),
  seqs: () => view.events.map((event) => event.seq),
  chartTotals: () => charts.totals(),
};
