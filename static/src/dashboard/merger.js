// SeqMerger: the exactly-once, in-order contract shared by both transports.
//
// `contiguous` is the highest seq below which every event the path's store holds has
// been delivered. Events at or below it are duplicates. An event above contiguous + 1
// waits in `pending` until the gap is filled (from the store) or until the store says
// the missing seqs do not exist on this path (routed elsewhere: `settle`), or the feed
// says it has sent everything it carries up to a seq (`advance`).
//
// Two kinds of seq move `contiguous` without reaching the table:
// - markers `{seq, skip: true}`: events the page leaves out (synthetic traffic);
// - seqs the page already shows from its start state (`preload`): the first copy the
//   feed delivers is the one expected while catching up, not a duplicate; a second is.

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
    this.shown = new Set();
  }

  // Seqs above `contiguous` that are on screen already (the page's own snapshot).
  preload(seqs) {
    for (const seq of seqs) if (seq > this.contiguous) this.shown.add(seq);
  }

  // Live events: in order they are delivered at once; out of order they wait.
  offer(events) {
    for (const event of events) {
      if (event.seq > this.highestSeen) this.highestSeen = event.seq;
      if (event.seq <= this.contiguous || this.pending.has(event.seq)) {
        if (!event.skip) this.duplicates += 1;
        continue;
      }
      this.hold(event);
    }
    this.release(this.contiguous);
  }

  // Backfilled events: everything the store holds after `after`, up to `upTo` (the last
  // seq it returned, or null when it returned nothing). Seqs missing in that range are
  // not on this path, so delivery moves past them.
  settle(backfilled, upTo) {
    let filled = 0;
    for (const event of backfilled) {
      if (event.seq > this.contiguous && !this.pending.has(event.seq)) {
        // A gap is a seq below one already seen live; catching up is not a gap.
        if (event.seq < this.highestSeen && !event.skip && !this.shown.has(event.seq)) filled += 1;
        this.hold(event);
      }
    }
    this.gapsFilled += filled;
    this.release(upTo ?? this.contiguous);
  }

  // The feed has sent everything it carries up to `seq` (a legacy `position` or
  // `resumed` frame): seqs it did not send are not for this page.
  advance(seq) {
    if (Number.isInteger(seq)) this.release(seq);
  }

  hold(event) {
    if (this.shown.delete(event.seq)) event = { seq: event.seq, skip: true };
    this.pending.set(event.seq, event);
  }

  // Deliver, in seq order, every pending event up to `limit` and any that follow on
  // without a gap; then `contiguous` is at least `limit`.
  release(limit) {
    const ordered = [...this.pending.values()].sort((a, b) => a.seq - b.seq);
    const ready = [];
    for (const event of ordered) {
      if (event.seq > limit && event.seq !== this.contiguous + 1) break;
      this.pending.delete(event.seq);
      if (event.seq <= this.contiguous) continue;
      this.contiguous = event.seq;
      if (!event.skip) ready.push(event);
    }
    if (limit > this.contiguous) this.contiguous = limit;
    for (const seq of this.shown) if (seq <= this.contiguous) this.shown.delete(seq);
    if (ready.length) this.onDeliver(ready);
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
