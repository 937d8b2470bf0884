"""A real request cycle on the new keys leaves the secret key and the signing key in no
answer and no log.

daphne, a Celery worker and the prober run as separate processes on the keys of a project
created today (``tests/rollout/stack.py``: publishable key, secret key, the PEM text of the
server's ES256 signing key in the environment), every logger at DEBUG. A browser session
loads the dashboard, refreshes its token and fetches the bundle; a producer sends events
that the worker writes to supabase_local with the secret key; the prober follows the
Supabase path with its own minted tokens; then every REST write fails for a while, so the
worker logs its errors. Nothing any process answered or logged carries a secret.
"""

import time

import httpx
import jwt
import pytest
from django.conf import settings
from django.test import Client

from events import services
from events.models import Delivery
from events.supabase_sink import supabase_breaker
from rollout.models import HealthSample
from tests.fixtures.django_processes import celery_worker_argv
from tests.fixtures.supabase_settings import es256_signing_key
from tests.rollout.stack import running_stack
from tests.security.test_secrets import assert_absent, secrets_of

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(300),
]


def wait(predicate, *, timeout: float, what: str, stack) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{stack.logs()}")


def answer_text(response: httpx.Response) -> str:
    headers = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
    return f"{headers}\n{response.text}"


def test_no_answer_or_process_log_of_a_real_request_cycle_holds_a_secret(django_supabase, user):
    server = django_supabase
    secrets = secrets_of(server)
    supabase_breaker().close()
    producer_token = services.producer_create(name="cycle").token
    browser = Client()
    browser.force_login(user)
    session = browser.cookies[settings.SESSION_COOKIE_NAME].value
    answers: list[tuple[str, str]] = []

    with running_stack(server) as stack:
        stack.env["LOG_LEVEL"] = "DEBUG"
        stack.start_daphne()
        stack.start("worker", celery_worker_argv(loglevel="debug"))  # Celery sets its own
        stack.wait_for_log("worker", "ready.", timeout=60)
        stack.start_prober("--interval", "1", "--loss-timeout", "5")
        http = httpx.Client(
            base_url=stack.base_url, cookies={settings.SESSION_COOKIE_NAME: session}, timeout=15
        )

        # a browser: the page, a token refresh, the bundle
        page = http.get("/")
        assert page.status_code == 200 and server.publishable_key in page.text
        token = http.get("/api/realtime-token")
        assert token.status_code == 200
        header = jwt.get_unverified_header(token.json()["access_token"])
        assert (header["alg"], header["kid"]) == ("ES256", es256_signing_key(server).kid)
        bundle = http.get("/static/dist/dashboard.js")
        assert bundle.status_code == 200 and len(bundle.content) > 10_000
        answers += [("/", answer_text(page)), ("/api/realtime-token", answer_text(token)),
                    ("/static/dist/dashboard.js", answer_text(bundle))]  # fmt: skip

        # a producer: the worker writes its events to Supabase with the secret key
        batch = {"events": [{"event_type": "tool.call", "source": "cycle"} for _ in range(5)]}
        ingest = http.post(
            "/api/events", json=batch, headers={"Authorization": f"Bearer {producer_token}"}
        )
        assert ingest.status_code == 201, ingest.text
        answers.append(("/api/events", answer_text(ingest)))
        seqs = [item["seq"] for item in ingest.json()["events"]]
        wait(
            lambda: len(server.sql("SELECT seq FROM monitoring_events WHERE seq = ANY(%s)", seqs))
            == 5,
            timeout=60, what="the worker's write to Supabase", stack=stack,
        )  # fmt: skip

        # the prober: its own tokens join Supabase Realtime and probes arrive there
        wait(
            lambda: HealthSample.objects.filter(
                transport="supabase", kind="delivery", value=1, origin="prober"
            ).exists(),
            timeout=90, what="a probe delivered on the Supabase path", stack=stack,
        )  # fmt: skip

        # then Supabase refuses every write for a while: the worker logs its failures
        server.set_faults(rest_error_rate=1.0, rest_error_status=503)
        try:
            failing = http.post(
                "/api/events",
                json={"event_type": "tool.error", "source": "cycle"},
                headers={"Authorization": f"Bearer {producer_token}"},
            )
            assert failing.status_code == 201
            failed_seq = failing.json()["seq"]
            wait(
                lambda: Delivery.objects.filter(
                    event_id=failed_seq, sink="supabase", attempts__gte=1
                ).exclude(last_error="").exists(),
                timeout=60, what="the worker's failed write", stack=stack,
            )  # fmt: skip
        finally:
            server.clear_faults()
        http.close()
        stack.stop_all()
        logs = {name: stack.log(name) for name in ("daphne", "worker", "prober")}

    for where, text in answers:
        assert_absent(text, secrets, where)
    assert all(logs.values()), "a process logged nothing: the check would be empty"
    for name, text in logs.items():  # every process really logged at DEBUG
        assert " DEBUG " in text or "DEBUG/" in text, f"no DEBUG record in the {name} log"
    for name, text in logs.items():
        assert_absent(text, secrets, f"the {name} log")
    supabase_breaker().close()
