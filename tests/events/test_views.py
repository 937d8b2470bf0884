"""The first dashboard page."""

import pytest

from events.services import event_publish_batch

pytestmark = pytest.mark.django_db


def test_the_dashboard_requires_sign_in(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_dashboard_lists_the_latest_events_newest_first(signed_in_client):
    seqs = [
        r.seq
        for r in event_publish_batch(
            events=[
                {"event_type": "tool.error", "source": "svc"},
                {"event_type": "a", "source": "s"},
            ]
        )
    ]
    response = signed_in_client.get("/")
    html = response.content.decode()
    assert response.status_code == 200
    assert html.index(f'data-seq="{seqs[1]}"') < html.index(f'data-seq="{seqs[0]}"')
    assert "badge--critical" in html
    assert 'id="connection"' in html
    assert f'<script id="latest-seq" type="application/json">{seqs[1]}</script>' in html


def test_static_module_is_served(signed_in_client):
    response = signed_in_client.get("/static/events/live_feed.js")
    assert response.status_code == 200
