"""The dashboard page and the realtime token endpoint."""

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.test import Client

from events.services import event_publish_batch
from supabase_local.signing_keys import signing_key_generate

pytestmark = pytest.mark.django_db


def page_config(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="dashboard-config" type="application/json">')
    body = html[start:].split(">", 1)[1].split("</script>", 1)[0]
    return json.loads(body)


def test_the_dashboard_requires_sign_in(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_page_carries_the_latest_events_and_the_users_transport(signed_in_client, user):
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
    config = page_config(response)
    assert response.status_code == 200
    assert [e["seq"] for e in config["initialEvents"]] == seqs[::-1]
    assert config["latestSeq"] == seqs[-1]
    assert config["transport"] == "websocket"  # shadow stage: nobody is on Supabase yet
    assert config["userId"] == user.pk
    assert config["supabase"] is None  # not configured in this test
    assert 'id="data-source"' in response.content.decode()


@pytest.fixture
def new_keys(settings):
    """The settings of a project created today, without a server (nothing is requested)."""
    key = signing_key_generate("ES256")
    settings.SUPABASE_URL = "http://127.0.0.1:54321"
    settings.SUPABASE_PUBLISHABLE_KEY = "sb_publishable_page-may-hold-this-one"
    settings.SUPABASE_SECRET_KEY = "sb_secret_must-never-leave-the-server"
    settings.SUPABASE_JWT_SIGNING_KEY = key.private_pem().decode()
    return key


def test_the_page_gets_the_publishable_key_and_a_token_signed_with_the_signing_key(
    signed_in_client, user, settings, new_keys
):
    response = signed_in_client.get("/")
    html = response.content.decode()
    supabase = page_config(response)["supabase"]
    assert supabase["publishableKey"] == "sb_publishable_page-may-hold-this-one"
    assert "anonKey" not in supabase  # it never was an anon key; the bundle reads both
    assert "sb_secret_must-never-leave-the-server" not in html
    assert "PRIVATE KEY" not in html
    header = jwt.get_unverified_header(supabase["token"])
    assert (header["alg"], header["kid"]) == ("ES256", new_keys.kid)
    claims = jwt.decode(
        supabase["token"], new_keys.public_key, algorithms=["ES256"], audience="authenticated"
    )
    assert claims["role"] == "authenticated" and claims["sub"] == str(user.pk)
    assert 0 < claims["exp"] - time.time() <= 15 * 60
    assert supabase["expiresAt"] == claims["exp"]


def test_the_token_endpoint_refreshes_for_signed_in_users_only(signed_in_client, settings):
    assert Client().get("/api/realtime-token").status_code == 401
    assert signed_in_client.get("/api/realtime-token").status_code == 503
    key = signing_key_generate("RS256")
    settings.SUPABASE_URL = "http://127.0.0.1:54321"
    settings.SUPABASE_PUBLISHABLE_KEY = "sb_publishable_x"
    settings.SUPABASE_SECRET_KEY = "sb_secret_x"
    settings.SUPABASE_JWT_SIGNING_KEY = key.private_pem().decode()
    body = signed_in_client.get("/api/realtime-token").json()
    assert set(body) == {"access_token", "expires_at"}
    header = jwt.get_unverified_header(body["access_token"])
    assert (header["alg"], header["kid"]) == ("RS256", key.kid)  # RS256 for an RSA key
    assert signed_in_client.post("/api/realtime-token").status_code == 405


def test_the_kill_switch_is_on_the_page_in_plain_words_for_users(signed_in_client, staff_user):
    from rollout.services import rollout_kill

    rollout_kill(actor=staff_user, reason="newcomer: half")
    response = signed_in_client.get("/")
    html = response.content.decode()
    rollout = page_config(response)["rollout"]
    assert rollout["killed"] is True
    assert rollout["message"].startswith("Live updates are running on the standard connection")
    assert "newcomer" not in html
    assert 'id="rollout-state"' in html and rollout["message"] in html


def test_staff_read_the_kill_switchs_reason(client, staff_user):
    from rollout.services import rollout_kill

    rollout_kill(actor=staff_user, reason="newcomer: half")
    client.force_login(staff_user)
    rollout = page_config(client.get("/"))["rollout"]
    assert rollout["reason"] == "newcomer: half"
    assert "newcomer: half" in rollout["message"]


def test_without_the_kill_switch_the_page_says_nothing_about_it(signed_in_client):
    rollout = page_config(signed_in_client.get("/"))["rollout"]
    assert (rollout["killed"], rollout["message"]) == (False, "")


def test_synthetic_events_are_left_out_of_a_users_page(signed_in_client):
    events = [
        {"event_type": "a", "source": "s"},
        {"event_type": "monitor.probe", "source": "prober"},
    ]
    shown, probe = [r.seq for r in event_publish_batch(events=events)]
    config = page_config(signed_in_client.get("/"))
    assert [e["seq"] for e in config["initialEvents"]] == [shown]
    assert config["latestSeq"] == probe  # the feed resumes after it
    assert config["synthetic"] == {"show": False, "types": ["monitor.probe"]}
    assert sum(sum(row["counts"].values()) for row in config["rate"]) == 1


def test_staff_can_show_synthetic_events_and_users_are_refused(client, user, staff_user):
    event_publish_batch(events=[{"event_type": "monitor.probe", "source": "prober"}])
    client.force_login(staff_user)
    config = page_config(client.get("/", {"synthetic": "show"}))
    assert config["synthetic"]["show"] is True and len(config["initialEvents"]) == 1
    client.force_login(user)
    assert client.get("/", {"synthetic": "show"}).status_code == 403


def test_the_page_carries_the_per_minute_counts_of_its_chart(signed_in_client):
    event_publish_batch(events=[{"event_type": "tool.error", "source": "s"}] * 3)
    config = page_config(signed_in_client.get("/"))
    assert [row["counts"] for row in config["rate"]] == [{"critical": 3}]
    assert config["initialAfter"] == 0  # fewer than 200 events: the snapshot is complete


def test_without_a_way_to_sign_tokens_the_page_stays_on_the_legacy_path(signed_in_client, settings):
    settings.SUPABASE_URL = "http://127.0.0.1:54321"
    settings.SUPABASE_PUBLISHABLE_KEY = "sb_publishable_x"
    settings.SUPABASE_SECRET_KEY = "sb_secret_x"  # the sink can write, browsers cannot read
    assert page_config(signed_in_client.get("/"))["supabase"] is None
    assert signed_in_client.get("/api/realtime-token").status_code == 503


def test_a_signing_key_that_cannot_sign_leaves_the_page_on_the_legacy_path_and_says_why(
    signed_in_client, settings, new_keys, caplog
):
    public_pem = new_keys.public_key.public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    ).decode()
    settings.SUPABASE_JWT_SIGNING_KEY = public_pem

    response = signed_in_client.get("/")

    assert response.status_code == 200
    assert page_config(response)["supabase"] is None
    refresh = signed_in_client.get("/api/realtime-token")
    assert refresh.status_code == 503
    assert refresh.json()["error"]["code"] == "supabase_not_configured"
    logged = [r.getMessage() for r in caplog.records if r.name == "events.views"]
    assert logged and logged[0].startswith(
        "cannot mint Supabase user tokens: SUPABASE_JWT_SIGNING_KEY is a public key"
    )
    assert public_pem.splitlines()[1] not in "\n".join(logged)
