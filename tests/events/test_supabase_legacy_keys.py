"""A deployment still on the legacy keys keeps working until Supabase turns them off.

With only ``SUPABASE_ANON_KEY``, ``SUPABASE_SERVICE_ROLE_KEY`` and ``SUPABASE_JWT_SECRET``
set (no new setting), against a real supabase_local that still serves its legacy keys:
the system check warns (``events.W002``, naming the end-of-2026 deprecation and the
settings to set instead), the sink writes with the service_role key, and the dashboard
gets the anon key and an HS256 user token that reads the table. The rest of the suite
runs on the new keys (``tests/fixtures/supabase_settings.py``).
"""

import httpx
import jwt
import pytest
from supabase import ClientOptions, create_client

from events.checks import supabase_settings_check
from events.services import event_publish
from events.supabase_sink import supabase_breaker, supabase_sink_flush
from tests.events.test_views import page_config
from tests.fixtures.supabase_settings import supabase_product_settings, supabase_settings_apply

pytestmark = pytest.mark.django_db


@pytest.fixture
def legacy_supabase(django_supabase, settings):
    supabase_settings_apply(settings, supabase_product_settings(django_supabase, legacy=True))
    assert not settings.SUPABASE_SECRET_KEY and not settings.SUPABASE_JWT_SIGNING_KEY
    supabase_breaker().close()
    return django_supabase


def test_the_system_check_warns_of_the_deprecation_and_says_what_to_set(legacy_supabase):
    messages = supabase_settings_check(None)
    assert [message.id for message in messages] == ["events.W002"]
    assert "end of 2026" in messages[0].msg
    assert "SUPABASE_SECRET_KEY" in messages[0].hint


def test_the_sink_writes_with_the_service_role_key(legacy_supabase):
    seq = event_publish(event_type="tool.call", source="legacy", payload={}).seq
    assert supabase_sink_flush().sent == 1
    rows = legacy_supabase.sql("SELECT seq, source FROM monitoring_events WHERE seq = %s", seq)
    assert rows == [{"seq": seq, "source": "legacy"}]


def test_the_page_gets_the_legacy_anon_key_and_an_hs256_token_that_reads_the_table(
    legacy_supabase, signed_in_client, user
):
    seq = event_publish(event_type="tool.call", source="legacy", payload={}).seq
    assert supabase_sink_flush().sent == 1

    supabase = page_config(signed_in_client.get("/"))["supabase"]

    assert supabase["publishableKey"] == legacy_supabase.anon_key
    assert jwt.get_unverified_header(supabase["token"]) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(
        supabase["token"], legacy_supabase.jwt_secret, algorithms=["HS256"],
        audience="authenticated",
    )  # fmt: skip
    assert claims["sub"] == str(user.pk)
    options = ClientOptions(
        headers={"Authorization": f"Bearer {supabase['token']}"},
        httpx_client=httpx.Client(timeout=10),
        postgrest_client_retry=False,
    )
    client = create_client(legacy_supabase.url, supabase["publishableKey"], options=options)
    rows = client.table("monitoring_events").select("seq").eq("seq", seq).execute()
    assert rows.data == [{"seq": seq}]
