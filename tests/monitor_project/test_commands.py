"""devstack_user (the local admin that `make run` prints) and devstack's stop signals."""

import signal
import stat
import subprocess
import sys

import pytest
from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command
from django.test import RequestFactory

pytestmark = pytest.mark.django_db


def ensure_admin(password_file) -> None:
    call_command("devstack_user", "--username", "admin", "--password-file", str(password_file))


def _sign_in(*, username: str, password: str):
    """Through the authentication backends, as the login form does (axes needs a request)."""
    return authenticate(RequestFactory().post("/accounts/login/"), username=username,
                        password=password)  # fmt: skip


def test_the_first_run_creates_a_superuser_with_a_generated_password_kept_in_the_file(tmp_path):
    password_file = tmp_path / "admin-password"
    ensure_admin(password_file)
    password = password_file.read_text().strip()
    assert len(password) >= 12
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    admin = _sign_in(username="admin", password=password)
    assert admin is not None and admin.is_staff and admin.is_superuser


def test_later_runs_never_reset_a_password_changed_in_the_admin(tmp_path):
    password_file = tmp_path / "admin-password"
    ensure_admin(password_file)
    generated = password_file.read_text()
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("changed-in-the-admin-42")
    admin.save()

    ensure_admin(password_file)
    password_file.unlink()
    ensure_admin(password_file)  # not even when the file is gone

    assert _sign_in(username="admin", password="changed-in-the-admin-42") is not None
    assert _sign_in(username="admin", password=generated.strip()) is None
    assert not password_file.exists()


def test_a_reset_database_gets_the_admin_back_with_the_password_in_the_file(tmp_path):
    password_file = tmp_path / "admin-password"
    password_file.write_text("kept-from-the-first-start\n")
    ensure_admin(password_file)
    assert _sign_in(username="admin", password="kept-from-the-first-start") is not None
    assert password_file.read_text() == "kept-from-the-first-start\n"


def test_a_too_short_password_in_the_file_is_refused_and_creates_nobody(tmp_path):
    password_file = tmp_path / "admin-password"
    password_file.write_text("short\n")
    with pytest.raises(CommandError, match="shorter than 12 characters; delete the file"):
        ensure_admin(password_file)
    assert not get_user_model().objects.exists()


def test_a_password_is_not_accepted_on_the_command_line(tmp_path):
    with pytest.raises(CommandError, match="unrecognized arguments: --password"):
        call_command(
            "devstack_user",
            "--username",
            "admin",
            "--password-file",
            str(tmp_path / "p"),
            "--password",
            "on-the-command-line",
        )
    assert not get_user_model().objects.exists()


# --- devstack: stopping ----------------------------------------------------------------------

STOPPABLE = """
import sys, time
import django
django.setup()
from monitor_project.management.commands.devstack import install_stop_handlers
install_stop_handlers()
try:
    print("ready", flush=True)
    time.sleep(60)
except KeyboardInterrupt:
    print("stopping in order", flush=True)
    sys.exit(0)
sys.exit(1)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_launcher_stops_in_order_on_sigint_even_when_started_with_it_ignored(sig):
    # A background job of a non-interactive shell starts with SIGINT ignored.
    process = subprocess.Popen(
        [sys.executable, "-c", STOPPABLE],
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(sig)
        assert process.wait(timeout=30) == 0
        assert process.stdout.read().strip() == "stopping in order"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
