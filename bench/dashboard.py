"""Dashboard first render, bundle size, and smoothness at 100 events/s.

Starts daphne on a throwaway database holding 200 events, opens the dashboard in
Debian's Chromium (headless, Playwright) signed in, and prints:
  - the bundle's size (raw and gzip),
  - first contentful paint and the time until the 200 rows are rendered (the page marks
    "feed:first-render"), median of several loads,
  - at 100 events/s for 10 s on the legacy path: frame times (p50/p95/max) measured with
    requestAnimationFrame in the page, and how many events arrived.

    .venv/bin/python bench/dashboard.py [--loads 5]
"""

import argparse
import gzip
import os
import secrets
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from ingest import drop_database, free_port, recreate_database, wait_http  # noqa: E402,I001
from tests.fixtures.chromium import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.fixtures.django_processes import daphne_argv, spawn_process, stop_process  # noqa: E402


FRAME_PROBE = """
() => new Promise(resolve => {
  const gaps = []; let last = performance.now(); const end = last + 10000;
  function tick(now) { gaps.push(now - last); last = now;
    if (now < end) requestAnimationFrame(tick); else resolve(gaps); }
  requestAnimationFrame(tick);
})
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()

    bundle = (REPO / "static/dist/dashboard.js").read_bytes()
    name = f"monitor_bench_ui_{secrets.token_hex(4)}"
    database_url = recreate_database(name)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": "redis://127.0.0.1:6379/6",
        "DJANGO_SETTINGS_MODULE": "monitor_project.settings.base",
        "DJANGO_DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "SUPABASE_URL": "",
        "SUPABASE_SERVICE_ROLE_KEY": "",
    }
    os.environ.update(env)
    import subprocess

    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True
    )
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=REPO,
        env=env,
        check=True,
    )
    import django

    django.setup()
    import random

    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from playwright.sync_api import sync_playwright

    from events.demo import demo_event
    from events.services import event_publish_batch

    rng = random.Random(7)
    event_publish_batch(events=[demo_event(rng) for _ in range(200)])
    user = get_user_model().objects.create_user(username="bench", password="bench-password-1")
    client = Client()
    client.force_login(user)
    session = client.cookies["sessionid"].value
    port = free_port()
    daphne = spawn_process(daphne_argv(port), env=env, log_path=Path(f"/tmp/{name}-daphne.log"))
    base = f"http://127.0.0.1:{port}"
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        wait_http(f"{base}/healthz")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            context = browser.new_context(base_url=base)
            context.add_cookies([{"name": "sessionid", "value": session, "url": base}])
            page = context.new_page()
            page.goto("/")  # warm-up: caches static files like a returning user
            fcp, rendered = [], []
            for _ in range(args.loads):
                page.evaluate("localStorage.clear()")
                page.goto("/", wait_until="load")
                page.wait_for_function("performance.getEntriesByName('feed:first-render').length")
                rows = page.locator("#event-rows tr").count()
                marks = page.evaluate(
                    "[performance.getEntriesByName('first-contentful-paint')[0]?.startTime,"
                    " performance.getEntriesByName('feed:first-render')[0].startTime]"
                )
                fcp.append(marks[0] or float("nan"))
                rendered.append(marks[1])
            page.wait_for_function(
                "document.getElementById('data-source').dataset.state === 'live'"
            )

            start_seq = page.evaluate("window.monitorFeed.contiguous")
            stop_publishing = threading.Event()

            def publish_at_100_per_second() -> None:
                next_at = time.monotonic()
                while not stop_publishing.is_set():
                    event_publish_batch(events=[demo_event(rng) for _ in range(10)])
                    next_at += 0.1
                    time.sleep(max(0.0, next_at - time.monotonic()))
                connection.close()

            publisher = threading.Thread(target=publish_at_100_per_second)
            publisher.start()
            gaps = page.evaluate(FRAME_PROBE)
            stop_publishing.set()
            publisher.join()
            page.wait_for_timeout(1500)
            arrived = page.evaluate("window.monitorFeed.contiguous") - start_seq
            browser.close()
    finally:
        stop_process(daphne)
        connection.close()
        drop_database(name)

    gaps.sort()
    print(
        f"bundle: static/dist/dashboard.js {len(bundle) / 1024:.1f} KiB, "
        f"{len(gzip.compress(bundle)) / 1024:.1f} KiB gzip"
    )
    print(
        f"first render with {rows} events, {args.loads} loads: "
        f"first contentful paint median {statistics.median(fcp):.0f} ms; "
        f"rows rendered median {statistics.median(rendered):.0f} ms "
        f"(max {max(rendered):.0f} ms); target 300 ms"
    )
    print(
        f"100 events/s for 10 s: {arrived} events arrived; frame time p50 "
        f"{gaps[len(gaps) // 2]:.1f} ms, p95 {gaps[int(len(gaps) * 0.95)]:.1f} ms, "
        f"max {gaps[-1]:.1f} ms over {len(gaps)} frames"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
