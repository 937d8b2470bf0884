"""``manage.py supabase_doctor`` against a real supabase_local: every mode a healthy
project can be in passes (exit 0), and each broken set-up fails the check that names it,
with what to do."""

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from events.supabase_sink import supabase_breaker
from rollout.open_pages import open_page_seen, open_pages_forget
from supabase_local.signing_keys import signing_key_generate
from tests.fixtures.supabase_local import running_supabase_local
from tests.fixtures.supabase_settings import supabase_product_settings, supabase_settings_apply

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture(scope="module")
def private_project():
    """A project as Monitor wants it: public channels off (Realtime Authorization only)."""
    with running_supabase_local(extra_args=("--private-only",)) as server:
        yield server


@pytest.fixture(autouse=True)
def _short_waits(monkeypatch):
    """A local server answers a join or a broadcast in milliseconds; the checks that are
    meant to fail here would otherwise each wait out the 10 s an operator's project gets."""
    from events import doctor as doctor_module

    monkeypatch.setattr(doctor_module, "JOIN_TIMEOUT_SECONDS", 4.0)
    monkeypatch.setattr(doctor_module, "BROADCAST_TIMEOUT_SECONDS", 4.0)


@pytest.fixture
def point_at(settings):
    def apply(server, *, legacy: bool = False, **overrides):
        values = supabase_product_settings(server, legacy=legacy)
        values.update(overrides)
        supabase_settings_apply(settings, values)
        supabase_breaker().close()
        # Each test's local log starts again at seq 1: an old row of that seq would make
        # the probe's upsert a no-op (ON CONFLICT DO NOTHING), and nothing would broadcast.
        server.truncate()

    open_pages_forget()
    yield apply
    open_pages_forget()
    supabase_breaker().close()


def doctor() -> tuple[bool, dict]:
    out = io.StringIO()
    try:
        call_command("supabase_doctor", "--json", stdout=out)
    except CommandError:
        passed = False
    else:
        passed = True
    return passed, json.loads(out.getvalue())


def failed(report: dict) -> dict[str, dict]:
    return {check["name"]: check for check in report["checks"] if not check["passed"]}


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_a_project_created_today_passes_with_its_round_trip(private_project, point_at, alg):
    key = next(k for k in private_project.signing_keys if k.alg == alg)
    point_at(private_project, SUPABASE_JWT_SIGNING_KEY=key.private_pem().decode())
    passed, report = doctor()
    assert passed, failed(report)
    assert report["round_trip_ms"] is not None and report["round_trip_ms"] >= 0
    names = [check["name"] for check in report["checks"]]
    assert names == [
        "url reachable", "migrations applied", "signing key published",
        "secret key can write", "publishable key cannot read",
        "private broadcast round trip", "public channels off", "plan against the load",
    ]  # fmt: skip


def test_a_project_on_the_legacy_keys_passes(private_project, point_at):
    point_at(private_project, legacy=True)
    passed, report = doctor()
    assert passed, failed(report)
    jwks = next(c for c in report["checks"] if c["name"] == "signing key published")
    assert "HS256" in jwks["detail"] and "deprecated" in jwks["detail"]


def test_the_human_checklist_and_the_exit_status(private_project, point_at):
    point_at(private_project)
    out = io.StringIO()
    call_command("supabase_doctor", stdout=out)
    text = out.getvalue()
    assert "Supabase doctor" in text and "broadcast round trip:" in text


def test_a_dropped_trigger_fails_the_migrations_and_the_round_trip(private_project, point_at):
    point_at(private_project)
    private_project.sql("DROP TRIGGER monitoring_events_broadcast ON public.monitoring_events")
    try:
        passed, report = doctor()
    finally:
        private_project.sql(
            "CREATE TRIGGER monitoring_events_broadcast AFTER INSERT ON public.monitoring_events "
            "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
            "EXECUTE FUNCTION public.monitoring_events_broadcast()"
        )
    problems = failed(report)
    assert not passed
    assert "trigger monitoring_events_broadcast" in problems["migrations applied"]["detail"]
    assert "supabase db push" in problems["migrations applied"]["fix"]
    assert "no broadcast of seq" in problems["private broadcast round trip"]["detail"]


def test_a_missing_receive_policy_refuses_the_join(private_project, point_at):
    point_at(private_project)
    definition = "DROP POLICY monitor_topics_authenticated_receive ON realtime.messages"
    private_project.sql(definition)
    try:
        passed, report = doctor()
    finally:
        private_project.sql(
            "CREATE POLICY monitor_topics_authenticated_receive ON realtime.messages "
            "FOR SELECT TO authenticated USING (realtime.topic() IN ('monitor:events', "
            "'monitor:control') AND extension = 'broadcast')"
        )
    problems = failed(report)
    assert not passed
    assert "policy: authenticated receive" in problems["migrations applied"]["detail"]
    assert "join refused" in problems["private broadcast round trip"]["detail"]


def test_the_secret_key_given_as_the_publishable_key_is_caught(private_project, point_at):
    point_at(private_project, SUPABASE_PUBLISHABLE_KEY=private_project.secret_key)
    passed, report = doctor()
    problem = failed(report)["publishable key cannot read"]
    assert not passed
    assert "1 row(s)" in problem["detail"] and "rotate the exposed secret key" in problem["fix"]


def test_the_publishable_key_given_as_the_secret_key_is_caught(private_project, point_at):
    point_at(private_project, SUPABASE_SECRET_KEY=private_project.publishable_key)
    passed, report = doctor()
    problems = failed(report)
    assert not passed
    assert "sb_secret_" in problems["secret key"]["fix"]
    assert "secret key can write" in problems


def test_a_signing_key_the_jwks_does_not_publish_is_caught(private_project, point_at):
    stranger = signing_key_generate("ES256")
    point_at(private_project, SUPABASE_JWT_SIGNING_KEY=stranger.private_pem().decode())
    passed, report = doctor()
    problems = failed(report)
    assert not passed
    assert "does not publish kid" in problems["signing key published"]["detail"]
    assert "import" in problems["signing key published"]["fix"]
    assert "join refused" in problems["private broadcast round trip"]["detail"]


def test_a_project_that_allows_public_channels_is_caught(supabase_local, point_at):
    point_at(supabase_local)  # the shared test server runs without --private-only
    passed, report = doctor()
    problem = failed(report)["public channels off"]
    assert not passed
    assert "Allow public access" in problem["fix"]


def test_a_plan_too_small_for_the_load_is_caught(
    private_project, point_at, settings, django_user_model
):
    from rollout.models import TransportChoice, TransportPreference

    point_at(private_project)
    settings.SUPABASE_PLAN = "custom:connections=2,messages=1000,joins=100,payload_kb=256"
    for index in range(3):
        user = django_user_model.objects.create_user(username=f"dash{index}")
        TransportPreference.objects.create(user=user, choice=TransportChoice.SUPABASE)
        open_page_seen(user_id=user.pk, transport="supabase", page_id="p")
    passed, report = doctor()
    problem = failed(report)["plan against the load"]
    assert not passed
    assert "over the plan's 2" in problem["detail"] and "upgrade the plan" in problem["fix"]


def test_a_broadcast_payload_limit_above_the_plans_is_caught(private_project, point_at, settings):
    point_at(private_project)
    settings.SUPABASE_PLAN = "free"  # 256 KB
    private_project.sql("UPDATE public.monitoring_broadcast_settings SET max_payload_kb = 3000")
    try:
        passed, report = doctor()
    finally:
        private_project.sql("UPDATE public.monitoring_broadcast_settings SET max_payload_kb = 256")
    problem = failed(report)["plan against the load"]
    assert not passed
    assert "up to 3000 KB, over the plan's 256 KB" in problem["detail"]
    assert "max_payload_kb = 256" in problem["fix"]
