// The Supabase path: Broadcast from the database on the private topic `monitor:events`
// (supabase/migrations/20261129000000_private_broadcast.sql), joined with the user's
// short-lived token (never a server key); broadcast replay on every rejoin, then a
// backfill through Supabase REST (on every join) for whatever replay did not cover; rollout control
// messages on the private topic `monitor:control`, which only the server can send to.

import { createClient } from "@supabase/supabase-js";

const TABLE = "monitoring_events";
const PAGE = 1000;
const EVENTS_TOPIC = "monitor:events";
const CONTROL_TOPIC = "monitor:control";
// Realtime keeps at most 25 messages per replay; older gaps are filled through REST.
const REPLAY_LIMIT = 25;
// Replay starts this long before the last message heard: the page's clock (corrected to
// the server's) and the database's are not the same clock. What comes twice is dropped.
const REPLAY_MARGIN_MS = 5000;
// After a (re)join the replayed messages follow the join reply at once; the REST backfill
// waits this long so that it only fetches what replay did not bring.
const BACKFILL_AFTER_REPLAY_MS = 300;
// Quota refusals of Realtime (a join refused, or a channel shut down for the project's
// messages per second): the page gives up this path at once, as a connection failure.
const QUOTA_REFUSAL = /RateLimitReached|Too many (connected users|joins|messages)/;

export function rowToEvent(row) {
  return {
    seq: Number(row.seq),
    event_type: row.event_type,
    source: row.source,
    criticality: row.criticality,
    occurred_at: row.occurred_at,
    received_at: row.received_at,
    payload: row.payload,
    checksum: row.checksum,
  };
}

export class SupabaseTransport {
  // `synthetic`: {show, types}. The topic carries every row; rows of synthetic events the
  // page leaves out become markers that only move the merger past their seq (dropping
  // them would make each one look like a lost event), and the REST backfill leaves them
  // out. `serverNow`: the server's clock as the page estimates it (replay's `since`).
  constructor({ config, tokens, onEvents, onControl, onStatus, onBackfill, onFailure, synthetic, serverNow }) {
    Object.assign(this, { config, tokens, onEvents, onControl, onStatus, onBackfill, onFailure });
    this.serverNow = serverNow ?? (() => Date.now());
    this.hidden = new Set(synthetic?.show ? [] : synthetic?.types ?? []);
    this.name = "supabase";
    this.client = null;
    this.stopped = true;
    this.everSubscribed = false;
    this.replayed = 0;
  }

  // The page's config names the browser key `publishableKey`; pages rendered before the
  // rename called it `anonKey`.
  get browserKey() {
    return this.config.publishableKey ?? this.config.anonKey;
  }

  async start(after) {
    this.stopped = false;
    this.after = after;
    // When the page last heard a message; null until it has joined once. The first join
    // asks for no replay: the page's snapshot and the REST backfill after it cover
    // everything up to now (and replay could bring messages of a log since reset).
    this.heardAt = null;
    this.client = createClient(this.config.url, this.browserKey, {
      accessToken: async () => this.tokens.current(),
      realtime: { params: { eventsPerSecond: -1 }, timeout: 5000, heartbeatIntervalMs: 5000 },
    });
    this.onStatus("connecting");
    this.tokens.onRefresh = (token) => this.client?.realtime.setAuth(token);
    this.failTimer = setTimeout(() => this.fail("no subscription within 8 s"), 8000);
    // The user's token must be on the socket before the join: a private topic refuses anon.
    await this.client.realtime.setAuth(this.tokens.current());
    if (this.stopped) return;

    this.events = this.client
      .channel(this.config.eventsTopic ?? EVENTS_TOPIC, { config: this.eventsConfig() })
      .on("broadcast", { event: "events" }, (message) => this.onBroadcast(message))
      .on("system", {}, (message) => this.onSystem(message))
      .subscribe((status, error) => this.status(status, error));
    this.control = this.client
      .channel(this.config.controlTopic ?? CONTROL_TOPIC, { config: { private: true } })
      .on("broadcast", { event: "control" }, (message) => this.onControl(message.payload))
      .subscribe();
  }

  // The join's config. supabase-js resends the join payload as it was when the page
  // subscribed on every rejoin, so the page sets it again (with a fresh `since`) each time
  // the channel goes down, before supabase-js rejoins.
  eventsConfig() {
    const broadcast = { self: false, ack: false };
    if (this.heardAt !== null) {
      broadcast.replay = { since: Math.max(0, Math.floor(this.heardAt - REPLAY_MARGIN_MS)), limit: REPLAY_LIMIT };
    }
    return { private: true, broadcast, presence: { key: "", enabled: false } };
  }

  rearmReplay() {
    const config = this.eventsConfig();
    this.events?.updateJoinPayload({ config: { ...config, postgres_changes: [] } });
  }

  onBroadcast(message) {
    if (this.stopped) return;
    const payload = message.payload ?? {};
    const replayed = message.meta?.replayed === true;
    if (!replayed) this.heardAt = this.serverNow();
    else this.replayed += 1;
    // A replayed message may hold events the page already has: the replay starts a margin
    // before the last message heard. They are expected, not duplicates of the feed.
    const floor = replayed ? this.after() : -Infinity;
    const events = [];
    for (const row of payload.events ?? []) {
      const event = rowToEvent(row);
      if (event.seq <= floor) continue;
      events.push(this.hidden.has(event.event_type) ? { seq: event.seq, skip: true } : event);
    }
    if (events.length) this.onEvents(events);
    // Events too large for a broadcast are announced by seq: read them through REST.
    if ((payload.announced ?? []).some((seq) => Number(seq) > this.after())) this.onBackfill();
  }

  onSystem(message) {
    const text = `${message?.message ?? ""} ${message?.payload?.message ?? ""}`;
    if (message?.status === "error" && QUOTA_REFUSAL.test(text)) this.fail(`quota: ${text.trim()}`);
  }

  status(status, error) {
    if (this.stopped) return;
    if (status === "SUBSCRIBED") {
      // A rejoin before any message was heard replays from this first subscription.
      if (this.heardAt === null) this.heardAt = this.serverNow();
      clearTimeout(this.failTimer);
      this.everSubscribed = true;
      this.onStatus("live");
      // Replay brings the latest messages missed; the backfill every (re)subscription
      // makes then reads by seq whatever replay could not cover.
      clearTimeout(this.backfillTimer);
      this.backfillTimer = setTimeout(() => this.onBackfill(), BACKFILL_AFTER_REPLAY_MS);
    } else if (status === "CHANNEL_ERROR" || status === "TIMED_OUT" || status === "CLOSED") {
      if (error && QUOTA_REFUSAL.test(String(error.message ?? error))) {
        this.fail(`quota: ${error.message ?? error}`);
        return;
      }
      this.rearmReplay();
      this.onStatus(navigator.onLine ? "reconnecting" : "offline", error);
      // supabase-js rejoins by itself; give up on this path only if it stays down.
      clearTimeout(this.failTimer);
      this.failTimer = setTimeout(() => this.fail(`channel ${status.toLowerCase()}`), 6000);
    }
  }

  fail(reason) {
    if (this.stopped) return;
    this.onFailure(reason);
  }

  reconnectNow() {
    this.rearmReplay();
    this.client?.realtime.connect();
  }

  async backfill(after) {
    const events = [];
    let cursor = after;
    for (;;) {
      let query = this.client
        .from(TABLE)
        .select("seq,event_type,source,criticality,occurred_at,received_at,payload,checksum")
        .gt("seq", cursor);
      for (const type of this.hidden) query = query.neq("event_type", type);
      const { data, error } = await query.order("seq").limit(PAGE);
      if (error) throw new Error(error.message);
      const page = data.map(rowToEvent);
      events.push(...page);
      if (page.length < PAGE) {
        return { events, upTo: page.length ? page[page.length - 1].seq : null };
      }
      cursor = page[page.length - 1].seq;
    }
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.failTimer);
    clearTimeout(this.backfillTimer);
    const client = this.client;
    this.client = null;
    if (client) client.removeAllChannels().finally(() => client.realtime.disconnect());
  }
}
