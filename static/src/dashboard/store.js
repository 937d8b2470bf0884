// The last events, kept in localStorage so that a reload shows them at once and the feed
// resumes after them.

const KEEP = 200;

export class LocalBuffer {
  // A staff page showing synthetic events keeps its own buffer: each buffer holds what
  // one view of the feed showed, and resumes that view.
  constructor(userId, { synthetic = false } = {}) {
    this.key = `monitor.feed.v1.${userId}${synthetic ? ".synthetic" : ""}`;
    this.saveTimer = null;
  }

  load() {
    try {
      const data = JSON.parse(localStorage.getItem(this.key) || "null");
      if (data && Array.isArray(data.events) && Number.isInteger(data.contiguous)) return data;
    } catch {
      // A corrupt entry is dropped; the server has everything.
    }
    return { contiguous: 0, events: [] };
  }

  // `snapshot` is called when the write happens, so the latest state is what is kept.
  save(snapshot) {
    clearTimeout(this.saveTimer);
    this.saveTimer = setTimeout(() => {
      try {
        const { contiguous, events } = snapshot();
        localStorage.setItem(this.key, JSON.stringify({ contiguous, events: events.slice(0, KEEP) }));
      } catch {
        // Storage full or disabled: the feed still works, it only starts empty next time.
      }
    }, 250);
  }
}
