// Events per minute by criticality, and delivery latency, drawn with uPlot.

import uPlot from "uplot";

const CRITICALITIES = ["critical", "performance", "user_activity", "system", "debug"];
const COLOURS = ["#ff5c5c", "#f0b429", "#4aa3ff", "#7bd88f", "#a78bfa"];
const MINUTES = 30;
const LATENCY_POINTS = 300;

export class Charts {
  constructor({ rateEl, latencyEl }) {
    this.perMinute = new Map(); // minute -> {criticality: count}
    this.seededThrough = 0; // events up to this seq are counted by `seed`
    this.latencies = [];
    const width = Math.max(300, rateEl.clientWidth || 480);
    this.rate = new uPlot(
      {
        width, height: 180, title: "Events per minute",
        // Always the last 30 minutes, so a single minute of data does not stretch the axis.
        scales: {
          x: {
            time: true,
            range: () => {
              const now = Math.floor(Date.now() / 60_000) * 60;
              return [now - (MINUTES - 1) * 60, now + 60];
            },
          },
          y: { range: (u, min, max) => [0, Math.max(5, max)] },
        },
        series: [{}, ...CRITICALITIES.map((label, i) => ({ label, stroke: COLOURS[i], width: 1.5, points: { show: true, size: 5 } }))],
        axes: [{ stroke: "#8a949e" }, { stroke: "#8a949e" }],
      },
      [[], ...CRITICALITIES.map(() => [])],
      rateEl,
    );
    this.latency = new uPlot(
      {
        width, height: 180, title: "Delivery latency (ms)",
        scales: { x: { time: true } },
        series: [{}, { label: "latency ms", stroke: "#8cc4ff", width: 1, points: { show: true, size: 4 } }],
        axes: [{ stroke: "#8a949e" }, { stroke: "#8a949e" }],
      },
      [[], []],
      latencyEl,
    );
    this.dirty = false;
    setInterval(() => this.redraw(), 1000);
  }

  // The last 30 minutes from the log, as the page was rendered: rows of
  // {minute: epoch seconds, counts: {criticality: n}} covering every seq up to `throughSeq`.
  seed(rows, throughSeq) {
    for (const { minute, counts } of rows) {
      const bucket = this.perMinute.get(minute) ?? {};
      for (const [criticality, count] of Object.entries(counts)) {
        bucket[criticality] = (bucket[criticality] ?? 0) + count;
      }
      this.perMinute.set(minute, bucket);
    }
    this.seededThrough = Math.max(this.seededThrough, throughSeq);
    this.dirty = true;
    this.redraw();
  }

  add(events) {
    for (const event of events) {
      if (event.seq <= this.seededThrough) continue; // counted by the seed already
      const minute = Math.floor(Date.parse(event.received_at) / 60_000) * 60;
      const bucket = this.perMinute.get(minute) ?? {};
      bucket[event.criticality] = (bucket[event.criticality] ?? 0) + 1;
      this.perMinute.set(minute, bucket);
    }
    this.dirty = true;
  }

  // Events counted in the chart's window, by criticality (for people and tests).
  totals() {
    const totals = {};
    for (const bucket of this.perMinute.values()) {
      for (const [criticality, count] of Object.entries(bucket)) {
        totals[criticality] = (totals[criticality] ?? 0) + count;
      }
    }
    return totals;
  }

  addLatency(ms) {
    this.latencies.push([Date.now() / 1000, ms]);
    if (this.latencies.length > LATENCY_POINTS) this.latencies.shift();
    this.dirty = true;
  }

  redraw() {
    if (!this.dirty) return;
    this.dirty = false;
    const minutes = [...this.perMinute.keys()].sort((a, b) => a - b).slice(-MINUTES);
    for (const key of this.perMinute.keys()) if (!minutes.includes(key)) this.perMinute.delete(key);
    this.rate.setData([minutes, ...CRITICALITIES.map((c) => minutes.map((m) => this.perMinute.get(m)[c] ?? 0))]);
    this.latency.setData([this.latencies.map((p) => p[0]), this.latencies.map((p) => p[1])]);
  }
}
