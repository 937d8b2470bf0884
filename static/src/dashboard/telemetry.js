// Reports this page's health on its transport to POST /api/telemetry, latencies corrected
// to the server clock with the offset measured through GET /api/time.

export class Telemetry {
  constructor({ csrfToken }) {
    this.csrfToken = csrfToken;
    this.offsetMs = 0;
    this.offsetKnown = false;
    // This page's id: every report (an empty one too, every 10 s) tells the server the page
    // is open on its transport, which the rollout's quota projections count.
    this.pageId = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
    this.reset();
    this.timer = setInterval(() => this.flush(), 10_000);
  }

  reset() {
    this.counts = { connects: 0, connect_failures: 0, errors: 0 };
    this.latencies = [];
  }

  // NTP-style: several round trips, and the one with the shortest round trip wins,
  // because its midpoint is the closest to the moment the server read its clock.
  async measureOffset(samples = 5) {
    let best = null;
    for (let i = 0; i < samples; i += 1) {
      try {
        const sent = Date.now();
        const response = await fetch("/api/time", { credentials: "same-origin", cache: "no-store" });
        const { now_ms: serverNow } = await response.json();
        const received = Date.now();
        const roundTrip = received - sent;
        if (!best || roundTrip < best.roundTrip) {
          best = { roundTrip, offset: serverNow - (sent + received) / 2 };
        }
      } catch {
        // Keep what the other samples gave.
      }
    }
    if (best) {
      this.offsetMs = best.offset;
      this.offsetKnown = true;
    }
  }

  serverNow() {
    return Date.now() + this.offsetMs;
  }

  count(name) {
    this.counts[name] += 1;
  }

  latency(ms) {
    if (this.latencies.length < 200 && Number.isFinite(ms) && ms >= 0) this.latencies.push(ms);
  }

  async flush(transport = this.transport) {
    const body = { transport, ...this.counts, latencies_ms: this.latencies, page: this.pageId };
    if (!transport) return;
    this.reset();
    try {
      await fetch("/api/telemetry", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": this.csrfToken },
        body: JSON.stringify({ ...body, clock_offset_ms: 0 }),
      });
    } catch {
      // Telemetry is best effort.
    }
  }
}
