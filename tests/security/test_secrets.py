"""The Supabase service-role key (and the JWT secret) never leave the server.

Django is pointed at a real supabase_local (``django_supabase``), whose keys are the
secrets looked for. Every route of the table in ``test_routes`` is requested as every
kind of caller; the Supabase sink writes, then fails until its breaker opens (which
records state changes, failed deliveries and an alert that the admin pages then show);
and no response body or header, no log record at any level from any logger, and no
``repr`` of the settings object carries either secret.
"""

import json
import logging
from collections.abc import Iterator

import pybreaker
import pytest
from django.test import Client

from events import services
from events.models import Delivery
from events.services import event_publish_batch
from events.supabase_client import supabase_settings
from events.supabase_sink import supabase_breaker, supabase_sink_flush
from tests.security.test_routes import CALLERS, CASES, case_send

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(240)]


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.formatter_ = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> Iterator[str]:
        for record in self.records:
            yield self.formatter_.format(record)  # message, args and any traceback
            yield repr(record.__dict__)


@pytest.fixture
def every_log_record(caplog) -> Iterator[Capture]:
    """Every record at DEBUG and above, from the root and from non-propagating loggers."""
    caplog.set_level(logging.DEBUG)
    capture = Capture()
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.propagate
    ]
    levels = {logger: logger.level for logger in loggers}
    for logger in loggers:
        logger.addHandler(capture)
        logger.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        for logger, level in levels.items():
            logger.removeHandler(capture)
            logger.setLevel(level)


@pytest.fixture
def sink(django_supabase) -> Iterator:
    supabase_breaker().close()
    django_supabase.clear_faults()
    yield django_supabase
    django_supabase.clear_faults()
    supabase_breaker().close()


def secrets_of(server) -> dict[str, str]:
    key = server.service_role_key
    return {
        "service_role_key": key,
        "service_role_key signature": key.rsplit(".", 1)[-1],
        "jwt_secret": server.jwt_secret,
    }


def assert_absent(text: str, secrets: dict[str, str], where: str) -> None:
    for name, secret in secrets.items():
        assert secret not in text, f"{name} found in {where}"


def response_text(response) -> str:
    headers = "\n".join(f"{name}: {value}" for name, value in response.items())
    cookies = response.cookies.output()
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return f"{headers}\n{cookies}\n{body.decode('utf-8', 'replace')}"


def test_the_service_role_key_reaches_no_page_answer_or_log(
    sink, every_log_record, django_capture_on_commit_callbacks, user, staff_user,
    django_user_model,
):  # fmt: skip
    secrets = secrets_of(sink)
    superuser = django_user_model.objects.create_superuser(username="root", password="pw-3")
    producer_token = services.producer_create(name="secrets").token

    # given: the sink wrote to Supabase, then failed until its breaker opened
    event_publish_batch(
        events=[{"event_type": "tool.call", "source": "secrets", "payload": {"i": i}}
                for i in range(3)]
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        assert supabase_sink_flush().sent == 3
    sink.set_faults(rest_error_rate=1.0, rest_error_status=503)
    for _ in range(3):
        event_publish_batch(events=[{"event_type": "tool.error", "source": "secrets"}])
        with django_capture_on_commit_callbacks(execute=True):
            supabase_sink_flush(include_failed=True)
    assert supabase_breaker().current_state == pybreaker.STATE_OPEN
    failed = list(Delivery.objects.filter(status="failed").values_list("last_error", flat=True))
    assert failed and all(failed)
    assert_absent(json.dumps(failed), secrets, "delivery errors")
    sink.clear_faults()

    # when every route is requested by every kind of caller
    sessions = {"signed_in": user, "staff": staff_user, "superuser": superuser}
    requested = 0
    for case in CASES:
        for caller in CALLERS:
            if caller == "producer":
                client = Client(headers={"Authorization": f"Bearer {producer_token}"})
            else:
                client = Client()
                if caller in sessions:
                    client.force_login(sessions[caller])
            response = case_send(client, case)
            assert response.status_code < 500, (case.id, caller)
            # then no answer carries a secret
            assert_absent(response_text(response), secrets, f"{case.id} as {caller}")
            requested += 1

    # and pages that show the breaker, the failed deliveries and the alert carry none
    admin = Client()
    admin.force_login(superuser)
    for path in (
        "/", "/settings/", "/metrics", "/api/realtime-token", "/admin/rollout/panel/",
        "/admin/rollout/panel/health.json", "/admin/events/breakerstatechange/",
        "/admin/events/delivery/?status__exact=failed", "/admin/rollout/alert/",
        f"/admin/events/delivery/{Delivery.objects.filter(status='failed').first().pk}/change/",
    ):  # fmt: skip
        response = admin.get(path)
        assert response.status_code == 200, path
        assert_absent(response_text(response), secrets, path)
    assert "breaker" in admin.get("/metrics").content.decode()

    # and no log record, at any level, from any logger, carries one
    assert every_log_record.records, "the capture saw nothing: the check would be empty"
    for text in every_log_record.texts():
        assert_absent(text, secrets, "a log record")

    # and the settings object does not show its keys
    assert_absent(repr(supabase_settings()), secrets, "repr(supabase_settings())")
    assert_absent(str(supabase_settings()), secrets, "str(supabase_settings())")
    assert requested == len(CASES) * len(CALLERS)


def test_the_dashboard_gives_the_browser_the_anon_key_and_a_user_token_only(
    django_supabase, signed_in_client
):
    page = signed_in_client.get("/").content.decode()
    assert django_supabase.anon_key in page  # public by design
    assert django_supabase.service_role_key not in page
    assert django_supabase.jwt_secret not in page
