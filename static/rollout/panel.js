// The rollout panel's live health: poll the staff JSON endpoint and swap in the section
// the server rendered (tables, thresholds, SVG charts). No client-side drawing code.
const section = document.getElementById("rollout-health");
const POLL_MS = 5000;

async function refresh() {
  try {
    const response = await fetch(section.dataset.url, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (response.ok) {
      const body = await response.json();
      section.innerHTML = body.html;
      section.classList.remove("stale");
    } else {
      section.classList.add("stale");
    }
  } catch {
    section.classList.add("stale");
  }
}

if (section) {
  setInterval(refresh, POLL_MS);
}
