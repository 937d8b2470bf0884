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
const buffer = new LocalBuffer(config.userId);
const telemetry = new Telemetry({ csrfToken: config.csrfToken });
const charts = new Charts({
  rateEl: document.getElementById("chart-rate"),
  latencyEl: document.getElementById("chart-latency"),
});
const tokens = config.supabase ? new TokenSource(config.supabase) : null;

// What this browser showed last time is on screen before the network answers.
const saved = buffer.load();
view.add([...saved.events, ...config.initialEvents]);
view.flush();
performance.mark("feed:first-render");

let received = 0;
let transport = null;
let backfilling = null;
const startAt = saved.contiguous > 0
  ? Math.max(saved.contiguous, config.latestSeq - MAX_CATCH_UP)
  : config.latestSeq;

const merger = new SeqMerger({
  contiguous: startAt,
  onDeliver: (events) => {
    received += events.length;
    view.add(events);
    charts.add(events);
    buffer.save(() => ({
      contiguous: merger.contiguous,
      events: newestFirst([...view.queue, ...view.events]),
    }));
    updateCounters();
  },
  onGap: () => backfillNow(),
});

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
  };
  if (name === "supabase") {
    transport = new SupabaseTransport({
      ...common,
      config: config.supabase,
      tokens,
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

async function transportRecheck(reason) {
  try {
    const response = await fetch("/api/transport", { credentials: "same-origin", cache: "no-store" });
    const body = await response.json();
    if (body.transport && body.transport !== transport?.name) {
      switchTo(body.transport, `The rollout moved this page to ${body.transport === "supabase" ? "Supabase Realtime" : "the legacy WebSocket feed"}${reason ? `: ${reason}` : ""}.`);
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

async function onControl(control) {
  if (control.action === "switch_transport" && control.transport) {
    switchTo(control.transport, `Switched to ${control.transport === "supabase" ? "Supabase Realtime" : "the legacy WebSocket feed"} by the rollout${control.reason ? `: ${control.reason}` : ""}.`);
  } else if (control.action === "transport_changed") {
    await transportRecheck(control.reason);
  }
}

window.addEventListener("offline", () => view.setIndicator(transport.name, "offline"));
window.addEventListener("online", () => {
  view.setIndicator(transport.name, "reconnecting");
  transport.reconnectNow();
  backfillNow();
});

telemetry.measureOffset();
setInterval(() => telemetry.measureOffset(), 60_000);
switchTo(config.transport);
updateCounters();

// For people and tests looking at a live page.
window.monitorFeed = {
  get transport() { return transport?.name; },
  get contiguous() { return merger.contiguous; },
  stats: () => ({ received, gapsFilled: merger.gapsFilled, duplicates: merger.duplicates }),
  seqs: () => view.events.map((event) => event.seq),
};
