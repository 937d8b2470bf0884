"""The dashboard a new user meets in the first hour: every event once across reloads, the
kill switch in words fit for the reader, the user's own choice reaching an open page,
no synthetic traffic in users' feeds, and a chart that starts from the log."""

import json
import time

import pytest

from events.services import event_publish_batch
from rollout.services import rollout_kill, rollout_resume, user_transport_preference_set
from tests.browser.test_dashboard import (
    LEGACY,
    SUPABASE,
    off_loop,
    publish,
    shown_seqs,
    supabase_user,
    wait_for_indicator,
    wait_for_seqs,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(240),
]

PROBE = "monitor.probe"


def publish_probes(count: int) -> list[int]:
    events = [{"event_type": PROBE, "source": "prober", "payload": {"i": i}} for i in range(count)]
    return [result.seq for result in off_loop(event_publish_batch, events=events)]


def stats(page) -> dict:
    return page.evaluate("window.monitorFeed.stats()")


def assert_each_once(page, expected: list[int]) -> None:
    rows = shown_seqs(page)
    assert len(rows) == len(set(rows)), f"{len(rows) - len(set(rows))} rows shown twice"
    assert rows == sorted(rows, reverse=True), "rows are not newest first"
    assert set(expected) <= set(rows), "an event is missing"


def wait_for_contiguous(page, seq: int, timeout_s: float = 30) -> None:
    page.wait_for_function(
        "seq => window.monitorFeed.contiguous >= seq", arg=seq, timeout=timeout_s * 1000
    )


def reload_and_settle(page, latest: int) -> None:
    page.reload()
    wait_for_indicator(page, LEGACY)
    wait_for_contiguous(page, latest)
    page.wait_for_timeout(600)  # a duplicate would have been rendered by now


# --- Exactly once on screen -------------------------------------------------------------


def test_after_reloads_every_event_is_shown_once(open_dashboard, user):
    page, _ = open_dashboard(user)
    wait_for_indicator(page, LEGACY)
    first = publish(205)
    wait_for_seqs(page, first[-200:])
    page.wait_for_timeout(500)  # the buffer is written a moment after rendering

    # The buffer (200 events) and the page's own snapshot (200) overlap: one row each.
    reload_and_settle(page, first[-1])
    assert_each_once(page, first[-200:])
    assert stats(page)["duplicates"] == 0

    more = publish(3)
    wait_for_seqs(page, more)
    page.wait_for_timeout(500)
    reload_and_settle(page, more[-1])
    assert_each_once(page, first[-197:] + more)
    assert stats(page)["duplicates"] == 0

    # Away for longer than the snapshot reaches back: the page catches up from its buffer
    # through the snapshot it already shows, and shows each of those events once.
    page.goto("about:blank")
    away = publish(260)
    page.goto("/")
    wait_for_indicator(page, LEGACY)
    wait_for_contiguous(page, away[-1])
    page.wait_for_timeout(600)
    assert_each_once(page, away[-200:])
    assert stats(page)["duplicates"] == 0
    assert stats(page)["gapsFilled"] == 0


def test_the_duplicates_counter_counts_each_copy_the_feed_delivers_twice(open_dashboard, user):
    page, _ = open_dashboard(user)
    wait_for_indicator(page, LEGACY)
    doubled: list[int] = []

    # Every event frame of the next connection arrives twice.
    def doubling(ws):
        server = ws.connect_to_server()
        ws.on_message(lambda message: server.send(message))

        def to_page(message):
            ws.send(message)
            data = json.loads(message)
            if data.get("type") == "event":
                doubled.append(data["event"]["seq"])
                ws.send(message)

        server.on_message(to_page)

    page.route_web_socket("**/ws/events/**", doubling)
    page.reload()
    wait_for_indicator(page, LEGACY)
    seqs = publish(4)
    wait_for_seqs(page, seqs)
    page.wait_for_timeout(600)
    assert doubled == seqs
    assert_each_once(page, seqs)
    assert stats(page)["duplicates"] == len(doubled)
    assert page.locator("#count-duplicates").inner_text() == str(len(doubled))


def test_a_live_event_lost_on_the_way_is_backfilled_once_for_a_user(open_dashboard, user):
    page, _ = open_dashboard(user)
    wait_for_indicator(page, LEGACY)
    dropped: list[int] = []
    resumed: list[int] = []
    refused: list[str] = []
    page.on("response", lambda r: r.status >= 400 and refused.append(f"{r.status} {r.url}"))

    # The first live event frame of the next connection never reaches the page.
    def losing_one(ws):
        server = ws.connect_to_server()
        ws.on_message(lambda message: server.send(message))

        def to_page(message):
            data = json.loads(message)
            if data.get("type") == "resumed":
                resumed.append(data["seq"])
            elif data.get("type") == "event" and resumed and not dropped:
                dropped.append(data["event"]["seq"])
                return
            ws.send(message)

        server.on_message(to_page)

    page.route_web_socket("**/ws/events/**", losing_one)
    page.reload()
    wait_for_indicator(page, LEGACY)
    # Publish only once the connection's catch-up is over: an event inside the catch-up is
    # covered by its `resumed` frame, which tells the page everything up to it was sent.
    deadline = time.monotonic() + 30
    while not resumed and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert resumed, "the feed never finished its catch-up"
    seqs = publish(3)
    wait_for_seqs(page, seqs)
    assert dropped == seqs[:1]
    assert_each_once(page, seqs)
    assert stats(page)["gapsFilled"] == 1
    assert refused == []


# --- The kill switch on the page --------------------------------------------------------


def test_the_kill_switch_is_shown_in_plain_words_to_users_and_with_its_reason_to_staff(
    open_dashboard, user, staff_user
):
    user_page, _ = open_dashboard(user)
    staff_page, _ = open_dashboard(staff_user)
    wait_for_indicator(user_page, LEGACY)
    wait_for_indicator(staff_page, LEGACY)
    assert user_page.locator("#rollout-state").is_hidden()

    off_loop(rollout_kill, actor=staff_user, reason="newcomer: half")

    # Live, on open pages.
    user_page.wait_for_selector("#rollout-state", state="visible", timeout=10_000)
    staff_page.wait_for_selector("#rollout-state", state="visible", timeout=10_000)
    user_words = user_page.locator("#rollout-state").inner_text()
    assert "standard connection" in user_words and "Nothing is lost" in user_words
    assert "newcomer" not in user_words
    assert "newcomer" not in user_page.locator("#notice").inner_text()
    assert "newcomer: half" in staff_page.locator("#rollout-state").inner_text()
    assert "Kill switch on" in staff_page.locator("#rollout-state").inner_text()

    # And on a page opened while it is on.
    user_page.reload()
    wait_for_indicator(user_page, LEGACY)
    assert user_page.locator("#rollout-state").is_visible()
    assert "newcomer" not in user_page.locator("body").inner_text()
    staff_page.reload()
    assert "newcomer: half" in staff_page.locator("#rollout-state").inner_text()

    # Released: the line goes away on open pages.
    off_loop(rollout_resume, actor=staff_user, reason="checked")
    user_page.wait_for_selector("#rollout-state", state="hidden", timeout=10_000)
    staff_page.wait_for_selector("#rollout-state", state="hidden", timeout=10_000)


# --- The user's own choice -------------------------------------------------------------


def choose_on_the_settings_page(context, choice: str) -> None:
    settings_page = context.new_page()
    settings_page.goto("/settings/")
    settings_page.check(f"input[name=transport][value={choice}]")
    settings_page.click(".rollout-settings button[type=submit]")
    settings_page.wait_for_selector("text=Your open dashboards follow your choice now")
    settings_page.close()


def test_a_users_own_choice_reaches_their_open_legacy_page(open_dashboard, user):
    page, context = open_dashboard(user)
    wait_for_indicator(page, LEGACY)
    page.evaluate("window.__sameDocument = true")

    choose_on_the_settings_page(context, "supabase")

    wait_for_indicator(page, SUPABASE, timeout_s=15)
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    assert "Your choice on the Settings page" in page.locator("#notice").inner_text()
    seqs = publish(3)
    wait_for_seqs(page, seqs)
    assert_each_once(page, seqs)

    # Back again: the Supabase page reads it by its poll, and says whose choice it was.
    choose_on_the_settings_page(context, "websocket")
    wait_for_indicator(page, LEGACY, timeout_s=15)
    assert "Your choice on the Settings page" in page.locator("#notice").inner_text()
    more = publish(2)
    wait_for_seqs(page, more)
    assert_each_once(page, seqs + more)


def test_a_choice_is_told_to_that_users_pages_only(open_dashboard, user, django_user_model):
    other = django_user_model.objects.create_user(username="other", password="pw-browser-2")
    mine, _ = open_dashboard(user)
    theirs, _ = open_dashboard(other)
    wait_for_indicator(mine, LEGACY)
    wait_for_indicator(theirs, LEGACY)

    off_loop(user_transport_preference_set, user=user, choice="supabase", reason="test")

    wait_for_indicator(mine, SUPABASE, timeout_s=15)
    theirs.wait_for_timeout(1000)
    assert theirs.evaluate("window.monitorFeed.transport") == "websocket"
    assert theirs.locator("#notice").is_hidden()


# --- Synthetic traffic -------------------------------------------------------------------


def test_probe_events_stay_out_of_a_users_legacy_feed_without_looking_lost(open_dashboard, user):
    page, _ = open_dashboard(user)
    wait_for_indicator(page, LEGACY)
    backfills: list[str] = []
    page.on(
        "request",
        lambda request: "/api/events" in request.url and backfills.append(request.url),
    )

    seqs: list[int] = []
    probes: list[int] = []
    for _ in range(3):
        seqs += publish(2)
        probes += publish_probes(1)
    seqs += publish(1)
    wait_for_seqs(page, seqs)
    wait_for_contiguous(page, seqs[-1])
    page.wait_for_timeout(600)

    assert not set(probes) & set(shown_seqs(page))
    assert page.locator("#event-rows tr", has_text=PROBE).count() == 0
    assert stats(page)["gapsFilled"] == 0
    assert backfills == [], "the seqs of left-out probes were taken for lost events"

    # The same after a reload (the snapshot and the replay leave them out too).
    publish_probes(2)
    last = publish(1)
    page.reload()
    wait_for_indicator(page, LEGACY)
    wait_for_contiguous(page, last[-1])
    assert page.locator("#event-rows tr", has_text=PROBE).count() == 0


def test_probe_events_stay_out_of_a_users_supabase_feed(open_dashboard, django_user_model):
    page, _ = open_dashboard(supabase_user(django_user_model, "sb-probes"))
    wait_for_indicator(page, SUPABASE)
    # The backfill every subscription makes (after replay) is done.
    page.wait_for_function("window.monitorFeed.stats().backfills >= 1", timeout=30_000)
    backfills: list[str] = []
    page.on(
        "request",
        lambda request: (
            "/rest/v1/monitoring_events" in request.url and backfills.append(request.url)
        ),
    )
    seqs = publish(2)
    probes = publish_probes(2)
    seqs += publish(2)
    wait_for_seqs(page, seqs)
    wait_for_contiguous(page, seqs[-1])
    page.wait_for_timeout(600)
    assert not set(probes) & set(shown_seqs(page))
    assert stats(page)["gapsFilled"] == 0
    assert backfills == [], "the seqs of left-out probes were taken for lost events"


def test_staff_can_show_synthetic_events_and_users_cannot(open_dashboard, user, staff_user):
    staff_page, _ = open_dashboard(staff_user)
    wait_for_indicator(staff_page, LEGACY)
    toggle = staff_page.locator("#toggle-synthetic")
    assert toggle.get_attribute("aria-checked") == "false"
    toggle.click()
    wait_for_indicator(staff_page, LEGACY)
    assert staff_page.locator("#toggle-synthetic").get_attribute("aria-checked") == "true"
    probes = publish_probes(2)
    wait_for_seqs(staff_page, probes)
    assert staff_page.locator("#event-rows tr", has_text=PROBE).count() >= 2

    user_page, _ = open_dashboard(user)
    assert user_page.locator("#toggle-synthetic").count() == 0
    response = user_page.goto("/?synthetic=show")
    assert response.status == 403


# --- The events-per-minute chart ----------------------------------------------------------


def test_the_rate_chart_starts_from_the_log_and_counts_each_event_once(open_dashboard, user):
    before = publish(7)
    publish_probes(3)  # left out of a user's chart like their table
    page, _ = open_dashboard(user)
    wait_for_indicator(page, LEGACY)

    def charted() -> int:
        return sum(page.evaluate("window.monitorFeed.chartTotals()").values())

    assert charted() == len(before)
    after = publish(2)
    wait_for_seqs(page, after)
    assert charted() == len(before) + len(after)
    page.reload()
    wait_for_indicator(page, LEGACY)
    assert charted() == len(before) + len(after)
