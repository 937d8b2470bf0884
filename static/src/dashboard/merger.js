// SeqMerger: the exactly-once, in-order contract shared by both transports.
//
// `contiguous` is the highest seq below which every event the path's store holds has
// been delivered. Events at or below it are duplicates. An event above contiguous + 1
// waits in `pending` until the gap is filled (from the store) or until the store says
// the missing seqs do not exist on this path (routed elsewhere: `settle`).

export class SeqMerger {
  constructor({ contiguous = 0, onDeliver, onGap }) {
    this.contiguous = contiguous;
    this.pending = new Map();
    this.onDeliver = onDeliver;
    this.onGap = onGap;
    this.duplicates = 0;
    this.gapsFilled = 0;
    this.highestSeen = contiguous;
    this.gapTimer = null;
  }

  // Live events: in order they are delivered at once; out of order they wait.
  offer(events) {
    const ready = [];
    for (const event of events) {
      if (event.seq > this.highestSeen) this.highestSeen = event.seq;
      if (event.seq <= this.contiguous || this.pending.has(event.seq)) {
        this.duplicates += 1;
        continue;
      }
      this.pending.set(event.seq, event);
    }
    while (this.pending.has(this.contiguous + 1)) {
      const next = this.pending.get(this.contiguous + 1);
      this.pending.delete(next.seq);
      this.contiguous = next.seq;
      ready.push(next);
    }
    if (ready.length) this.onDeliver(ready);
    this.scheduleGapCheck();
  }

  // Backfilled events: everything the store holds after `after`, up to `upTo` (the last
  // seq it returned, or null when it returned nothing). Seqs missing in that range are
  // not on this path, so delivery moves past them.
  settle(backfilled, upTo) {
    let filled = 0;
    for (const event of backfilled) {
      if (event.seq > this.contiguous && !this.pending.has(event.seq)) {
        this.pending.set(event.seq, event);
        // A gap is a seq below one already seen live; catching up is not a gap.
        if (event.seq < this.highestSeen) filled += 1;
      }
    }
    const limit = upTo ?? this.contiguous;
    const ordered = [...this.pending.values()].sort((a, b) => a.seq - b.seq);
    const ready = [];
    for (const event of ordered) {
      if (event.seq > limit && event.seq !== this.contiguous + 1) break;
      this.pending.delete(event.seq);
      if (event.seq <= this.contiguous) continue;
      this.contiguous = event.seq;
      ready.push(event);
    }
    if (upTo !== null && upTo !== undefined && upTo > this.contiguous) this.contiguous = upTo;
    if (ready.length) {
      this.gapsFilled += filled;
      this.onDeliver(ready);
    }
    this.scheduleGapCheck();
  }

  scheduleGapCheck(delayMs = 300) {
    if (this.pending.size === 0 || this.gapTimer) return;
    this.gapTimer = setTimeout(() => {
      this.gapTimer = null;
      if (this.pending.size) this.onGap(this.contiguous);
    }, delayMs);
  }
}
