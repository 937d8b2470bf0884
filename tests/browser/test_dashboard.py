"""The dashboard in a real browser, on both transports, across switches and outages."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from events.services import event_publish_batch
from rollout.models import HealthSample
from rollout.services import rollout_kill, user_transport_preference_set
from tests.browser.conftest import screenshot

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(240),
]

LEGACY = "WebSocket (legacy)"
SUPABASE = "Supabase Realtime"


def off_loop(function, /, *args, **kwargs):
    """Run in a plain thread: Playwright's event loop runs in this one, and the channel
    layer's async_to_sync refuses to run beside it."""

    def call():
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


def publish(count: int, source: str = "browser-test") -> list[int]:
    events = [
        {"event_type": "tool.call", "source": source, "payload": {"i": i}} for i in range(count)
    ]
    return [result.seq for result in off_loop(event_publish_batch, events=events)]


def wait_for_indicator(page, text: str, timeout_s: float = 30) -> None:
    page.wait_for_function(
        "text => document.getElementById('data-source').textContent === text",
        arg=text,
        timeout=timeout_s * 1000,
    )


def wait_for_seqs(page, seqs: list[int], timeout_s: float = 30) -> None:
    page.wait_for_function(
        "wanted => { const have = new Set(window.monitorFeed.seqs());"
        " return wanted.every(seq => have.has(seq)); }",
        arg=seqs,
        timeout=timeout_s * 1000,
    )


def supabase_failure_reported(page, timeout_s: float = 20) -> bool:
    """Whether the page's telemetry reports a failed Supabase connection within
    ``timeout_s`` (the page sends its reports on its own timer)."""

    def reported() -> bool:
        return HealthSample.objects.filter(
            origin="browser", transport="supabase", kind="connect_failure"
        ).exists()

    deadline = time.monotonic() + timeout_s
    while not reported() and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    return reported()


def shown_seqs(page) -> list[int]:
    """The rows of the table, top to bottom (newest first)."""
    return [
        int(seq)
        for seq in page.eval_on_selector_all(
            "#event-rows tr[data-seq]", "rows => rows.map(row => row.dataset.seq)"
        )
    ]


def assert_each_once_in_order(page, expected: list[int]) -> None:
    rows = shown_seqs(page)
    assert len(rows) == len(set(rows)), "an event is shown twice"
    assert rows == sorted(rows, reverse=True), "rows are not newest first"
    assert set(expected) <= set(rows)


def supabase_user(django_user_model, name: str):
    user = django_user_model.objects.create_user(username=name, password="pw-browser-1")
    # Off the loop: the choice is told to the user's open legacy feeds after commit.
    off_loop(user_transport_preference_set, user=user, choice="supabase", reason="browser test")
    return user


def test_a_legacy_user_sees_events_arrive_on_the_legacy_path(open_dashboard, user):
    page, _ = open_dashboard(user)
    wait_for_indicator(page, LEGACY)
    seqs = publish(3)
    wait_for_seqs(page, seqs)
    assert_each_once_in_order(page, seqs)
    assert page.locator("#event-rows tr.crit--system").count() >= 3
    assert page.evaluate("window.monitorFeed.stats()")["gapsFilled"] == 0
    page.wait_for_timeout(1200)  # let the charts redraw before the picture
    screenshot(page, "indicator-legacy")


def test_a_supabase_user_sees_events_arrive_through_supabase_realtime(
    open_dashboard, django_user_model
):
    page, _ = open_dashboard(supabase_user(django_user_model, "sb-user"))
    wait_for_indicator(page, SUPABASE)
    seqs = publish(3)
    wait_for_seqs(page, seqs)
    assert_each_once_in_order(page, seqs)
    assert page.evaluate("window.monitorFeed.transport") == "supabase"
    # They came live through postgres_changes, not from a backfill.
    assert page.evaluate("window.monitorFeed.stats()")["gapsFilled"] == 0
    page.wait_for_timeout(1200)  # let the charts redraw before the picture
    screenshot(page, "indicator-supabase")


def test_the_kill_switch_moves_an_open_supabase_page_to_legacy_without_loss(
    open_dashboard, django_user_model, staff_user
):
    page, _ = open_dashboard(supabase_user(django_user_model, "sb-kill"))
    wait_for_indicator(page, SUPABASE)
    page.evaluate("window.__sameDocument = true")
    published: list[int] = []

    def keep_publishing() -> None:
        try:
            for _ in range(30):
                published.extend(
                    [
                        r.seq
                        for r in event_publish_batch(
                            events=[{"event_type": "tool.call", "source": "across-switch"}] * 2
                        )
                    ]
                )
                time.sleep(0.1)
        finally:
            connection.close()

    publisher = threading.Thread(target=keep_publishing)
    publisher.start()
    time.sleep(1.0)
    off_loop(rollout_kill, actor=staff_user, reason="browser test: kill switch")
    publisher.join(timeout=60)

    wait_for_indicator(page, LEGACY)
    wait_for_seqs(page, published)
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    assert_each_once_in_order(page, published)
    assert "rollout" in page.locator("#notice").inner_text().lower()


def test_offline_for_20_seconds_then_every_event_once_in_order(open_dashboard, user):
    page, context = open_dashboard(user)
    wait_for_indicator(page, LEGACY)
    before = publish(2)
    wait_for_seqs(page, before)

    context.set_offline(True)
    missed: list[int] = []
    for _ in range(4):
        missed.extend(publish(3, source="while-offline"))
        time.sleep(5)  # 20 s offline in all
    context.set_offline(False)

    wait_for_seqs(page, missed, timeout_s=60)
    assert_each_once_in_order(page, before + missed)


def test_a_reload_shows_the_buffered_events_before_the_network_answers(open_dashboard, user):
    page, _ = open_dashboard(user)
    wait_for_indicator(page, LEGACY)
    seqs = publish(5)
    wait_for_seqs(page, seqs)
    page.wait_for_timeout(500)  # the buffer is written a moment after rendering

    # On reload the page's own HTML carries no events and the feed never answers, so
    # whatever is shown comes from the browser's buffer.
    def page_without_events(route):
        response = route.fetch()
        html = response.text().replace('"initialEvents": [', '"initialEvents": [], "x": [')
        route.fulfill(response=response, body=html)

    page.route("**/", page_without_events)
    page.route("**/api/events*", lambda route: None)  # never answered
    page.route_web_socket("**/ws/events/**", lambda ws: None)  # never connects
    page.reload(wait_until="domcontentloaded")
    page.wait_for_selector(f"#event-rows tr[data-seq='{seqs[-1]}']", timeout=5000)
    assert set(seqs) <= set(shown_seqs(page))


def test_realtime_faults_make_the_page_fall_back_and_report_it(
    open_dashboard, django_user_model, supabase_local
):
    user = supabase_user(django_user_model, "sb-fault")
    page, _ = open_dashboard(user)
    wait_for_indicator(page, SUPABASE)

    # Every Realtime frame is held for 30 s and every socket is closed: rejoining times out.
    supabase_local.set_faults(realtime_latency_ms=30_000)
    supabase_local.close_realtime_connections()

    wait_for_indicator(page, LEGACY, timeout_s=60)
    assert "Supabase Realtime failed" in page.locator("#notice").inner_text()
    seqs = publish(2)
    wait_for_seqs(page, seqs)
    screenshot(page, "fallback-to-legacy")

    assert supabase_failure_reported(page), "the page did not report its failed connection"
