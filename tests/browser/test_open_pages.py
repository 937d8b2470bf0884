"""Open dashboards count as open on their transport, even with no event to report: the
page's telemetry heartbeat is what the rollout's quota projections measure."""

import time

import pytest

from rollout.open_pages import open_pages, open_pages_forget
from tests.browser.test_dashboard import LEGACY, SUPABASE, supabase_user, wait_for_indicator

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]


def test_quiet_dashboards_are_counted_open_on_their_transport(open_dashboard, django_user_model):
    open_pages_forget()
    legacy_user = django_user_model.objects.create_user(username="quiet-legacy")
    legacy, _ = open_dashboard(legacy_user)
    chooser = supabase_user(django_user_model, "quiet-supabase")
    supabase, _ = open_dashboard(chooser)
    wait_for_indicator(legacy, LEGACY)
    wait_for_indicator(supabase, SUPABASE)
    # No event is published: only the heartbeat (every 10 s) can tell the server.
    deadline = time.monotonic() + 30
    seen = None
    while time.monotonic() < deadline:
        seen = open_pages().by_transport
        if seen == {"websocket": 1, "supabase": 1}:
            break
        legacy.wait_for_timeout(500)
    assert seen == {"websocket": 1, "supabase": 1}
    assert set(open_pages().users()) == {legacy_user.pk, chooser.pk}
