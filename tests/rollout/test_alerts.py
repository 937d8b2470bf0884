"""Alerts: grouping of repeats, delivery by email and to a real webhook server."""

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from rollout import services
from rollout.models import Alert

pytestmark = pytest.mark.django_db


class _Recorder(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(
            {"body": json.loads(body), "content_type": self.headers["Content-Type"]}
        )
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook_server() -> Iterator[type[_Recorder]]:
    handler = type("Recorder", (_Recorder,), {"received": [], "status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def test_a_repeat_of_an_open_alert_is_grouped(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        first = services.alert_raise(kind="breaker_opened", severity="warning", message="open")
        again = services.alert_raise(
            kind="breaker_opened", severity="critical", message="still open", figures={"n": 2}
        )
    assert first.pk == again.pk
    again.refresh_from_db()
    assert again.count == 2
    assert again.severity == "critical"
    assert again.figures == {"n": 2}
    assert again.last_seen >= again.first_seen
    # Only the first occurrence is delivered.
    assert len(callbacks) == 1


def test_an_acknowledged_alert_is_not_reopened(staff_user):
    first = services.alert_raise(kind="reconciliation_discrepancy", severity="warning", message="a")
    services.alert_acknowledge(alert=first, user=staff_user)
    second = services.alert_raise(
        kind="reconciliation_discrepancy", severity="warning", message="b"
    )
    assert second.pk != first.pk
    assert Alert.objects.filter(kind="reconciliation_discrepancy").count() == 2


def test_a_bad_severity_is_refused():
    with pytest.raises(ValueError):
        services.alert_raise(kind="x", severity="loud", message="m")


def test_an_alert_is_emailed_to_the_admins_and_posted_to_the_webhook(
    settings, mailoutbox, webhook_server, celery_eager, django_capture_on_commit_callbacks
):
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.ROLLOUT_ALERT_WEBHOOK_URL = webhook_server.url
    with django_capture_on_commit_callbacks(execute=True):
        alert = services.alert_raise(
            kind="rollback", severity="critical", message="rolled back", figures={"p95": 12.5}
        )
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == ["ops@example.com"]
    assert "rolled back" in mailoutbox[0].body
    assert len(webhook_server.received) == 1
    assert webhook_server.received[0]["content_type"] == "application/json"
    assert "rolled back" in webhook_server.received[0]["body"]["text"]
    assert "p95=12.5" in webhook_server.received[0]["body"]["text"]
    alert.refresh_from_db()
    assert alert.delivered_at is not None
    assert alert.delivery_error == ""


def test_a_failing_webhook_is_recorded_and_email_still_goes_out(
    settings, mailoutbox, webhook_server, celery_eager, django_capture_on_commit_callbacks
):
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.ROLLOUT_ALERT_WEBHOOK_URL = webhook_server.url
    webhook_server.status = 500
    with django_capture_on_commit_callbacks(execute=True):
        alert = services.alert_raise(kind="rollback", severity="critical", message="m")
    assert len(mailoutbox) == 1
    alert.refresh_from_db()
    assert "webhook" in alert.delivery_error


def test_delivering_a_deleted_alert_does_nothing():
    services.alert_deliver(alert_id=987654)
