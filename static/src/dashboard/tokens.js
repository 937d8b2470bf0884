// The user's short-lived Supabase access token (role authenticated), refreshed from the
// server before it expires. The page never holds the service-role key.

export class TokenSource {
  constructor({ token, expiresAt }) {
    this.token = token;
    this.expiresAt = expiresAt;
    this.onRefresh = null;
    this.schedule();
  }

  current() {
    return this.token;
  }

  schedule() {
    clearTimeout(this.timer);
    const lifetime = this.expiresAt * 1000 - Date.now();
    // Refresh at 80 % of the lifetime, at least every 5 s when it is nearly over.
    this.timer = setTimeout(() => this.refresh(), Math.max(5_000, lifetime * 0.8));
  }

  async refresh() {
    try {
      const response = await fetch("/api/realtime-token", { credentials: "same-origin", cache: "no-store" });
      if (response.ok) {
        const body = await response.json();
        this.token = body.access_token;
        this.expiresAt = body.expires_at;
        this.onRefresh?.(this.token);
      }
    } finally {
      this.schedule();
    }
  }
}
