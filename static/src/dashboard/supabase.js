// The Supabase path: postgres_changes on monitoring_events through supabase-js, with the
// user's short-lived token (never the service key), backfill through Supabase REST, and
// rollout control messages on the broadcast topic.

import { createClient } from "@supabase/supabase-js";

const TABLE = "monitoring_events";
const PAGE = 1000;

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
  // `synthetic`: {show, types}. Realtime carries every row; rows of synthetic events the
  // page leaves out become markers that only move the merger past their seq (filtering
  // them out of the subscription would make each one look like a lost event), and the
  // REST backfill leaves them out.
  constructor({ config, tokens, onEvents, onControl, onStatus, onBackfill, onFailure, synthetic }) {
    Object.assign(this, { config, tokens, onEvents, onControl, onStatus, onBackfill, onFailure });
    this.hidden = new Set(synthetic?.show ? [] : synthetic?.types ?? []);
    this.name = "supabase";
    this.client = null;
    this.stopped = true;
    this.everSubscribed = false;
  }

  async start(after) {
    this.stopped = false;
    this.after = after;
    this.client = createClient(this.config.url, this.config.anonKey, {
      accessToken: async () => this.tokens.current(),
      realtime: { params: { eventsPerSecond: -1 }, timeout: 5000, heartbeatIntervalMs: 5000 },
    });
    this.onStatus("connecting");
    this.tokens.onRefresh = (token) => this.client?.realtime.setAuth(token);
    this.failTimer = setTimeout(() => this.fail("no subscription within 8 s"), 8000);
    // The user's token must be on the socket before the join, or the channel joins as
    // anon and RLS (rightly) lets no change through.
    await this.client.realtime.setAuth(this.tokens.current());
    if (this.stopped) return;

    this.events = this.client
      .channel("monitor-events")
      .on("postgres_changes", { event: "INSERT", schema: "public", table: TABLE }, (change) => {
        const event = rowToEvent(change.new);
        this.onEvents([this.hidden.has(event.event_type) ? { seq: event.seq, skip: true } : event]);
      })
      .subscribe((status, error) => this.status(status, error));
    this.control = this.client
      .channel(this.config.controlTopic)
      .on("broadcast", { event: "control" }, (message) => this.onControl(message.payload))
      .subscribe();
  }

  status(status, error) {
    if (this.stopped) return;
    if (status === "SUBSCRIBED") {
      clearTimeout(this.failTimer);
      this.everSubscribed = true;
      this.onStatus("live");
      // Every (re)subscription backfills what was missed while not subscribed.
      this.onBackfill();
    } else if (status === "CHANNEL_ERROR" || status === "TIMED_OUT" || status === "CLOSED") {
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
    const client = this.client;
    this.client = null;
    if (client) client.removeAllChannels().finally(() => client.realtime.disconnect());
  }
}
