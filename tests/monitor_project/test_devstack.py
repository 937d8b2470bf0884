"""The dev stack launcher: quiet terminal, full logs, shared settings, and supabase_local
started on the keys of a project created today (its signing key generated once)."""

import io
import os
import secrets
import stat
import sys
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from psycopg import sql as pgsql
from rich.console import Console

from monitor_project import devstack
from monitor_project.devstack_settings import devstack_settings_read
from supabase_local.auth import mint_token
from supabase_local.config import DEV_JWT_SECRET
from supabase_local.signing_keys import signing_key_from_pem
from tests.fixtures.django_processes import free_port

PY = sys.executable


@pytest.fixture
def stack(tmp_path, monkeypatch):
    monkeypatch.setattr(devstack, "DEVSTACK_DIR", tmp_path)
    monkeypatch.setattr(devstack, "LOG_DIR", tmp_path / "logs")
    terminal = io.StringIO()
    stack = devstack.Stack(console=Console(file=terminal, width=200))
    stack.terminal = terminal
    yield stack
    stack.stop()


def test_a_childs_whole_output_goes_to_its_log_file_not_the_terminal(stack, capfd):
    process = stack.spawn(
        "celery worker",
        [PY, "-c", "print('banner ' * 3); import sys; sys.stderr.write('root warning')"],
    )
    process.wait(timeout=30)

    log = devstack.LOG_DIR / "celery-worker.log"
    text = log.read_text()
    assert "banner banner banner" in text and "root warning" in text
    captured = capfd.readouterr()
    assert "banner" not in captured.out + captured.err
    assert stack.terminal.getvalue() == ""


def test_a_failed_step_names_its_exit_code_and_shows_the_end_of_its_log(stack):
    script = "import sys; print('\\n'.join(f'line {i}' for i in range(50))); sys.exit(3)"
    with pytest.raises(devstack.DevstackError) as failed, stack.step("database migrations"):
        stack.run("migrate", [PY, "-c", script])
    message = str(failed.value)
    assert message.startswith("migrate failed with exit code 3; the end of ")
    assert "migrate.log" in message
    assert "line 49" in message and "line 29" not in message  # the last 20 lines only
    assert stack.terminal.getvalue() == "✗ database migrations\n"


def test_a_step_that_succeeds_is_one_line_with_a_check_mark(stack):
    with stack.step("Redis (embedded, port 6390)"):
        stack.run("redis-check", [PY, "-c", "print('lots of output')"])
    assert stack.terminal.getvalue() == "✓ Redis (embedded, port 6390)\n"


def test_waiting_stops_at_once_when_a_child_dies_and_shows_its_log(stack):
    stack.spawn("daphne", [PY, "-c", "import sys; print('port in use'); sys.exit(1)"])
    with pytest.raises(devstack.DevstackError, match=r"(?s)daphne exited with code 1.*port in use"):
        devstack.wait_for(lambda: False, what="daphne", seconds=60, stack=stack)


def test_the_shared_settings_exist_while_the_stack_runs_and_stop_removes_them(stack):
    child = stack.spawn("prober", [PY, "-c", "import time; time.sleep(60)"])
    stack.shared.update({"REDIS_URL": "redis://127.0.0.1:6390/0"})
    stack.share()
    assert devstack_settings_read(devstack.DEVSTACK_DIR) == {
        "REDIS_URL": "redis://127.0.0.1:6390/0"
    }
    assert devstack.devstack_settings_owner(devstack.DEVSTACK_DIR) == os.getpid()

    stack.stop()

    assert child.poll() is not None
    assert not (devstack.DEVSTACK_DIR / "settings.json").exists()


def test_a_second_stack_in_the_same_checkout_is_refused(stack, monkeypatch):
    stack.share()
    monkeypatch.setattr(devstack.os, "getpid", lambda: 1)  # another launcher
    with pytest.raises(devstack.DevstackError, match="a dev stack is already running"):
        devstack.refuse_a_second_stack()


# --- supabase_local on the keys of a project created today (a real server) ------------------


def test_the_signing_key_is_generated_once_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "supabase-signing-key.pem"
    devstack.signing_key_ensure(path)
    first = path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signing_key_from_pem(first).alg == "ES256"

    path.chmod(0o644)
    devstack.signing_key_ensure(path)
    assert path.read_bytes() == first  # kept: tokens and the JWKS stay the same across runs
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_broken_signing_key_file_is_named_with_what_to_do(tmp_path):
    path = tmp_path / "supabase-signing-key.pem"
    path.write_text("not a key")
    with pytest.raises(devstack.DevstackError, match="delete it and make run generates a new one"):
        devstack.signing_key_ensure(path)


@pytest.fixture
def supabase_database() -> Iterator[str]:
    name = f"monitor_devstack_test_{secrets.token_hex(4)}"
    server = "postgresql://postgres@127.0.0.1:5432/postgres"
    url = devstack.ensure_database(server, name)
    yield url
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(
            pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name))
        )


@pytest.mark.timeout(120)
def test_supabase_local_runs_on_the_new_keys_and_the_app_gets_only_those(
    stack, monkeypatch, tmp_path, supabase_database
):
    monkeypatch.setattr(devstack, "SIGNING_KEY_FILE", tmp_path / "supabase-signing-key.pem")
    port = free_port()

    devstack.start_supabase_local(stack, database_url=supabase_database, port=port)

    shared = stack.shared
    assert sorted(shared) == [
        "SUPABASE_JWT_SIGNING_KEY", "SUPABASE_PUBLISHABLE_KEY", "SUPABASE_SECRET_KEY",
        "SUPABASE_URL",
    ]  # fmt: skip
    assert shared["SUPABASE_PUBLISHABLE_KEY"].startswith("sb_publishable_")
    assert shared["SUPABASE_SECRET_KEY"].startswith("sb_secret_")
    assert shared["SUPABASE_JWT_SIGNING_KEY"] == str(devstack.SIGNING_KEY_FILE)  # a path
    assert all(stack.env[name] == value for name, value in shared.items())
    url = shared["SUPABASE_URL"]
    key = signing_key_from_pem(devstack.SIGNING_KEY_FILE.read_bytes())
    jwks = httpx.get(f"{url}/auth/v1/.well-known/jwks.json", timeout=10).json()
    assert [(k["kid"], k["alg"]) for k in jwks["keys"]] == [(key.kid, "ES256")]

    # a token minted as the app mints it is accepted with the publishable key
    token = mint_token(signing_key=key, role="authenticated", sub="1", expires_in=60)
    read = httpx.get(
        f"{url}/rest/v1/monitoring_events?select=seq&limit=1",
        headers={"apikey": shared["SUPABASE_PUBLISHABLE_KEY"], "Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert read.status_code == 200, read.text
    # and the legacy JWT keys are off
    legacy = mint_token(secret=DEV_JWT_SECRET, role="service_role", expires_in=60)
    refused = httpx.get(
        f"{url}/rest/v1/monitoring_events?select=seq", headers={"apikey": legacy}, timeout=10
    )
    assert refused.status_code == 401
    assert "Legacy API keys are disabled" in refused.text


@pytest.mark.timeout(120)
@pytest.mark.django_db
def test_the_dev_stacks_supabase_local_passes_the_doctor(
    stack, monkeypatch, tmp_path, supabase_database, settings
):
    """`make run`'s Supabase is a project as Monitor wants one: private channels only,
    the migrations, the signing key in the JWKS; `manage.py supabase_doctor` says so."""
    import io
    import json

    from django.core.management import call_command

    from tests.fixtures.supabase_settings import SUPABASE_KEY_SETTINGS

    monkeypatch.setattr(devstack, "SIGNING_KEY_FILE", tmp_path / "supabase-signing-key.pem")
    devstack.start_supabase_local(stack, database_url=supabase_database, port=free_port())
    for name in SUPABASE_KEY_SETTINGS:
        setattr(settings, name, stack.shared.get(name, ""))
    settings.SUPABASE_PLAN = ""
    out = io.StringIO()
    call_command("supabase_doctor", "--json", stdout=out)  # raises unless every check passes
    report = json.loads(out.getvalue())
    assert report["passed"] and report["round_trip_ms"] is not None
    public = next(check for check in report["checks"] if check["name"] == "public channels off")
    assert public["detail"] == "public channels are refused"
