// The legacy path: the Channels feed at /ws/events/, which replays from the Django log on
// every (re)connect after the seq we pass, and fills its own gaps.

export class LegacyTransport {
  // `synthetic`: {show, types}; only a staff page that shows synthetic events asks for them.
  constructor({ onEvents, onControl, onStatus, onBackfill, onPosition, synthetic }) {
    Object.assign(this, { onEvents, onControl, onStatus, onBackfill, onPosition });
    this.query = synthetic?.show ? "&synthetic=show" : "";
    this.name = "websocket";
    this.socket = null;
    this.stopped = true;
    this.retryMs = 500;
    this.retryTimer = null;
  }

  start(after) {
    this.stopped = false;
    this.connect(after);
  }

  connect(after) {
    clearTimeout(this.retryTimer);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/events/?after=${after()}${this.query}`);
    this.socket = socket;
    this.onStatus("connecting");
    socket.onopen = () => {
      this.retryMs = 500;
      this.onStatus("live");
    };
    socket.onmessage = (message) => {
      const data = JSON.parse(message.data);
      if (data.type === "event") this.onEvents([data.event]);
      // The feed has sent everything it carries up to seq (it leaves some events out).
      else if (data.type === "position" || data.type === "resumed") this.onPosition(data.seq);
      else if (data.type === "control") this.onControl(data);
    };
    socket.onclose = () => {
      if (this.socket !== socket || this.stopped) return;
      this.onStatus(navigator.onLine ? "reconnecting" : "offline");
      this.retryTimer = setTimeout(() => this.connect(after), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 5000);
    };
    this.after = after;
  }

  reconnectNow() {
    if (this.stopped) return;
    this.retryMs = 500;
    if (!this.socket || this.socket.readyState > 1) this.connect(this.after);
  }

  // The Django backfill API, limited to what this path carries.
  async backfill(after) {
    const events = [];
    let cursor = after;
    for (;;) {
      const response = await fetch(`/api/events?sink=websocket&limit=1000&after=${cursor}${this.query}`, {
        credentials: "same-origin",
      });
      if (!response.ok) throw new Error(`backfill answered ${response.status}`);
      const body = await response.json();
      events.push(...body.events);
      if (body.events.length < 1000) return { events, upTo: body.next_after };
      cursor = body.next_after;
    }
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close();
  }
}
