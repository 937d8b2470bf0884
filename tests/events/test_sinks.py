"""The websocket sink (events/sinks.py): after commit, the legacy feed's send and its mark."""

import pytest

from events.models import Delivery, Event
from events.services import event_publish

pytestmark = pytest.mark.django_db


def test_a_send_the_channel_layer_refuses_marks_the_delivery_failed_and_keeps_the_event(
    settings, django_capture_on_commit_callbacks
):
    unreachable = {"hosts": ["redis://127.0.0.1:1/0"], "prefix": "monitor-test-unreachable"}
    settings.CHANNEL_LAYERS = {
        "default": {**settings.CHANNEL_LAYERS["default"], "CONFIG": unreachable}
    }
    with django_capture_on_commit_callbacks(execute=True):
        result = event_publish(event_type="tool.error", source="s")

    assert Event.objects.filter(seq=result.seq).exists()
    websocket = Delivery.objects.get(event_id=result.seq, sink="websocket")
    assert (websocket.status, websocket.attempts) == ("failed", 1)
    assert "Error" in websocket.last_error, websocket.last_error


def test_a_sent_event_is_marked_sent_once(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        result = event_publish(event_type="tool.error", source="s")

    websocket = Delivery.objects.get(event_id=result.seq, sink="websocket")
    assert (websocket.status, websocket.attempts) == ("sent", 1)
    assert websocket.sent_at is not None
