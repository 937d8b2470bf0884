"""The Supabase secret key and the private JWT signing key never leave the server.

Django is pointed at a real supabase_local (``django_supabase``) with the keys of a
project created today: its secret key and the PEM text of its ES256 signing key are the
secrets looked for (the whole PEM, each line of its body and the private scalar as a JWK
would carry it), along with the server's legacy service_role key and JWT secret.

Every route of the table in ``test_routes`` is requested as every kind of caller; the
Supabase sink writes, then fails until its breaker opens (which records state changes,
failed deliveries and an alert that the admin pages then show); and no response body or
header, no log record at any level from any logger, no ``repr`` of the settings object,
no error report and no file of the static bundle carries any of them. The same with real
processes (daphne, a Celery worker) and their logs: ``test_secrets_processes.py``.
"""

import base64
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pybreaker
import pytest
from django.conf import settings
from django.test import Client
from django.views.debug import get_default_exception_reporter_filter

from events import services
from events.models import Delivery
from events.services import event_publish_batch
from events.supabase_client import supabase_settings
from events.supabase_sink import supabase_breaker, supabase_sink_flush
from tests.fixtures.supabase_settings import es256_signing_key, supabase_product_settings
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
    """Every secret of the server's, as the text that would betray it."""
    signing_key = es256_signing_key(server)
    pem = signing_key.private_pem().decode("ascii")
    body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    private_scalar = signing_key.private_key.private_numbers().private_value
    legacy = server.service_role_key
    return {
        "secret key": server.secret_key,
        "signing key PEM": pem,
        **{f"signing key PEM line {n}": line for n, line in enumerate(body, 1)},
        "signing key PEM body": "".join(body),
        "signing key d (JWK)": base64.urlsafe_b64encode(private_scalar.to_bytes(32, "big"))
        .rstrip(b"=")
        .decode(),
        "signing key d (decimal)": str(private_scalar),
        "service_role_key": legacy,
        "service_role_key signature": legacy.rsplit(".", 1)[-1],
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


def test_the_secret_key_and_signing_key_reach_no_page_answer_or_log(
    sink, every_log_record, django_capture_on_commit_callbacks, user, staff_user,
    django_user_model,
):  # fmt: skip
    secrets = secrets_of(sink)
    superuser = django_user_model.objects.create_superuser(username="root", password="pw-3")
    producer_token = services.producer_create(name="secrets").token

    in_use = (settings.SUPABASE_SECRET_KEY, settings.SUPABASE_JWT_SIGNING_KEY)
    assert in_use == (sink.secret_key, secrets["signing key PEM"])  # the new keys are in use
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


def test_the_dashboard_gives_the_browser_the_publishable_key_and_a_user_token_only(
    django_supabase, signed_in_client
):
    page = signed_in_client.get("/").content.decode()
    assert django_supabase.publishable_key in page  # public by design
    assert_absent(page, secrets_of(django_supabase), "the dashboard page")
    token = signed_in_client.get("/api/realtime-token").content.decode()
    assert_absent(token, secrets_of(django_supabase), "/api/realtime-token")


def test_an_error_report_masks_the_new_settings():
    """What Django's error pages and mails show of the settings (DEBUG, mail_admins)."""
    safe = get_default_exception_reporter_filter().get_safe_settings()
    for name in ("SUPABASE_SECRET_KEY", "SUPABASE_JWT_SIGNING_KEY", "SUPABASE_SERVICE_ROLE_KEY",
                 "SUPABASE_JWT_SECRET"):  # fmt: skip
        assert safe[name] == "********************", name
    assert safe["SUPABASE_PUBLISHABLE_KEY"] == "********************"  # masked too: harmless


def test_the_static_bundle_built_with_the_secrets_in_the_environment_holds_none(
    supabase_local, tmp_path
):
    """The bundle is built by esbuild (scripts/build-frontend.mjs); nothing may carry a
    server setting into it, even when the build runs where the settings are exported."""
    secrets = secrets_of(supabase_local)
    env = {
        **os.environ,
        **supabase_product_settings(supabase_local),
        "SUPABASE_SERVICE_ROLE_KEY": supabase_local.service_role_key,
        "SUPABASE_JWT_SECRET": supabase_local.jwt_secret,
    }
    built = subprocess.run(
        ["npm", "run", "build", "--silent"], cwd=settings.BASE_DIR, env=env,
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    files = sorted((Path(settings.BASE_DIR) / "static").rglob("*.*"))
    assert any(f.name == "dashboard.js" for f in files), "no bundle was built"
    for path in files:
        assert_absent(path.read_text(encoding="utf-8", errors="replace"), secrets, str(path))
