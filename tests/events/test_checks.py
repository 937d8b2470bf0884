"""System checks of the Supabase settings (events/checks.py): the two complete
configurations, the deprecation warning of the legacy one, and an error that says what to
set for everything in between. No message carries a key."""

import os
import subprocess
import sys

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings

from events.checks import supabase_settings_check
from supabase_local.signing_keys import signing_key_generate
from tests.fixtures.supabase_settings import SUPABASE_KEY_SETTINGS

SIGNING_PEM = signing_key_generate("ES256").private_pem().decode()
NEW = {
    "SUPABASE_URL": "https://abcd.supabase.co",
    "SUPABASE_PUBLISHABLE_KEY": "sb_publishable_browser-key-0123456789",
    "SUPABASE_SECRET_KEY": "sb_secret_server-key-0123456789",
    "SUPABASE_JWT_SIGNING_KEY": SIGNING_PEM,
}
LEGACY_SECRET = "a-legacy-jwt-secret-of-at-least-32-characters"
LEGACY = {
    "SUPABASE_URL": "https://abcd.supabase.co",
    "SUPABASE_ANON_KEY": jwt.encode({"role": "anon"}, LEGACY_SECRET, algorithm="HS256"),
    "SUPABASE_SERVICE_ROLE_KEY": jwt.encode(
        {"role": "service_role"}, LEGACY_SECRET, algorithm="HS256"
    ),
    "SUPABASE_JWT_SECRET": LEGACY_SECRET,
}


@pytest.fixture
def configure(settings):
    def apply(**values: str) -> list:
        for name in SUPABASE_KEY_SETTINGS:
            setattr(settings, name, values.get(name, ""))
        messages = supabase_settings_check(None)
        for message in messages:  # whatever it says, it never shows a key
            text = f"{message.msg} {message.hint}"
            for name, value in values.items():
                if name != "SUPABASE_URL":
                    assert value.splitlines()[len(value.splitlines()) // 2] not in text, name
        return messages

    return apply


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def test_nothing_configured_is_one_warning_naming_the_new_settings(configure):
    messages = configure()
    assert ids(messages) == ["events.W001"]
    assert "SUPABASE_PUBLISHABLE_KEY" in messages[0].hint
    assert "SUPABASE_JWT_SIGNING_KEY" in messages[0].hint


def test_the_keys_of_a_project_created_today_pass(configure):
    assert configure(**NEW) == []
    assert configure(**NEW, SUPABASE_JWT_SIGNING_KEY_ID="monitor-2026-11") == []


def test_the_legacy_keys_still_work_with_a_warning_that_names_the_deprecation(configure):
    messages = configure(**LEGACY)
    assert ids(messages) == ["events.W002"]
    assert "deprecates at the end of 2026" in messages[0].msg
    for name in ("SUPABASE_PUBLISHABLE_KEY", "SUPABASE_SECRET_KEY", "SUPABASE_JWT_SIGNING_KEY"):
        assert name in messages[0].hint


@pytest.mark.parametrize(
    "missing", ["SUPABASE_PUBLISHABLE_KEY", "SUPABASE_SECRET_KEY", "SUPABASE_JWT_SIGNING_KEY"]
)
def test_an_incomplete_new_configuration_names_what_is_missing(configure, missing):
    values = {name: value for name, value in NEW.items() if name != missing}
    messages = configure(**values)
    assert ids(messages) == ["events.E001"]
    assert messages[0].msg.startswith(f"{missing} is not set but ")


def test_a_kid_without_a_signing_key_is_an_error(configure):
    values = {name: value for name, value in NEW.items() if name != "SUPABASE_JWT_SIGNING_KEY"}
    messages = configure(**values, SUPABASE_JWT_SIGNING_KEY_ID="monitor-2026-11")
    assert ids(messages) == ["events.E001"]
    assert "SUPABASE_JWT_SIGNING_KEY is not set" in messages[0].msg


def test_a_url_without_keys_asks_for_the_new_ones(configure):
    messages = configure(SUPABASE_URL="https://abcd.supabase.co")
    assert ids(messages) == ["events.E001"] * 3
    assert [m.msg.split()[0] for m in messages] == [
        "SUPABASE_PUBLISHABLE_KEY", "SUPABASE_SECRET_KEY", "SUPABASE_JWT_SIGNING_KEY",
    ]  # fmt: skip


def test_keys_without_a_url_are_an_error(configure):
    values = {name: value for name, value in NEW.items() if name != "SUPABASE_URL"}
    assert ids(configure(**values)) == ["events.E001"]
    assert ids(configure(**NEW | {"SUPABASE_URL": "abcd.supabase.co"})) == ["events.E002"]


@pytest.mark.parametrize(
    "legacy", ["SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_JWT_SECRET"]
)
def test_a_legacy_setting_beside_the_new_keys_is_an_error(configure, legacy):
    messages = configure(**NEW, **{legacy: LEGACY[legacy]})
    assert ids(messages) == ["events.E003"]
    assert messages[0].msg.startswith(f"{legacy} (a legacy key) is set beside the new keys")
    assert f"Unset {legacy}" in messages[0].hint


def test_a_new_key_with_legacy_keys_for_the_rest_is_an_error_not_a_guess(configure):
    messages = configure(**LEGACY | {"SUPABASE_SECRET_KEY": NEW["SUPABASE_SECRET_KEY"]})
    assert set(ids(messages)) == {"events.E001", "events.E003"}
    assert "events.W002" not in ids(messages)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("SUPABASE_PUBLISHABLE_KEY", NEW["SUPABASE_SECRET_KEY"]),
        ("SUPABASE_ANON_KEY", NEW["SUPABASE_SECRET_KEY"]),
        ("SUPABASE_ANON_KEY", LEGACY["SUPABASE_SERVICE_ROLE_KEY"]),
    ],
    ids=["secret-as-publishable", "secret-as-anon", "service-role-jwt-as-anon"],
)
def test_a_server_key_where_browsers_would_get_it_is_an_error(configure, setting, value):
    base = NEW if setting == "SUPABASE_PUBLISHABLE_KEY" else LEGACY
    messages = configure(**base | {setting: value})
    assert "events.E004" in ids(messages)
    refusal = next(m for m in messages if m.id == "events.E004")
    assert refusal.msg.startswith(f"{setting} holds a secret (service_role) key")


def test_keys_of_the_wrong_kind_in_the_new_settings_are_errors(configure):
    messages = configure(
        **NEW
        | {
            "SUPABASE_SECRET_KEY": NEW["SUPABASE_PUBLISHABLE_KEY"],
            "SUPABASE_PUBLISHABLE_KEY": LEGACY["SUPABASE_ANON_KEY"],
        }
    )
    assert sorted(m.msg for m in messages if m.id == "events.E004") == [
        "SUPABASE_PUBLISHABLE_KEY is not a publishable key (sb_publishable_…)",
        "SUPABASE_SECRET_KEY is not a secret key (sb_secret_…)",
    ]


def test_a_signing_key_that_cannot_sign_is_an_error_naming_the_setting(configure):
    public_pem = (
        signing_key_generate("ES256")
        .public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    messages = configure(**NEW | {"SUPABASE_JWT_SIGNING_KEY": public_pem})
    assert ids(messages) == ["events.E005"]
    assert messages[0].msg.startswith("SUPABASE_JWT_SIGNING_KEY is a public key")


# --- manage.py check, as an operator runs it (real subprocesses, settings from the environment)


def manage_check(**supabase: str) -> subprocess.CompletedProcess:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in SUPABASE_KEY_SETTINGS and name != "DJANGO_SETTINGS_MODULE"
    }
    env["DJANGO_SETTINGS_MODULE"] = "monitor_project.settings.test"
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=settings.BASE_DIR, env={**env, **supabase},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_pem_on_one_line_with_backslash_n_as_env_files_hold_it_is_read():
    one_line = SIGNING_PEM.strip().replace("\n", "\\n")
    assert "\n" not in one_line

    # A real project's complete configuration names its plan too (else warning events.W003).
    checked = manage_check(**NEW | {"SUPABASE_JWT_SIGNING_KEY": one_line, "SUPABASE_PLAN": "pro"})

    assert checked.returncode == 0, checked.stderr
    assert "System check identified no issues" in checked.stdout


def test_manage_py_check_on_the_legacy_keys_passes_with_the_deprecation_warning():
    checked = manage_check(**LEGACY)
    assert checked.returncode == 0, checked.stderr
    assert "events.W002" in checked.stderr + checked.stdout
    assert "end of 2026" in checked.stderr + checked.stdout


def test_manage_py_check_stops_on_a_mixed_configuration():
    checked = manage_check(**NEW | {"SUPABASE_ANON_KEY": LEGACY["SUPABASE_ANON_KEY"]})
    assert checked.returncode != 0
    assert "events.E003" in checked.stderr
    assert LEGACY["SUPABASE_ANON_KEY"] not in checked.stderr + checked.stdout
