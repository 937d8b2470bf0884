"""The settings a running dev stack shares with manage.py in the same checkout."""

import json
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from monitor_project.devstack import signing_key_ensure, supabase_local_environment
from monitor_project.devstack_settings import (
    DevstackSettingsError,
    devstack_settings_owner,
    devstack_settings_path,
    devstack_settings_read,
    devstack_settings_remove,
    devstack_settings_write,
)

# The stack's signing key file, written for this module's run (a running stack keeps its own
# in .devstack/); manage.py check loads it.
SIGNING_KEY_PATH = Path(tempfile.gettempdir()) / f"devstack-settings-test-{os.getpid()}.pem"
STACK = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/devstack_settings_probe",
    "REDIS_URL": "redis://127.0.0.1:6390/0",
    **supabase_local_environment(
        "http://127.0.0.1:54321",
        publishable_key="sb_publishable_devstackprobe0123456789_abcdefgh",
        secret_key="sb_secret_devstackprobe0123456789_abcdefgh",
        signing_key_path=SIGNING_KEY_PATH,
    ),
    "ROLLOUT_PROBER_BASE_URL": "http://127.0.0.1:8000",
}
SHARED_NAMES = [name for name in STACK if name.startswith(("SUPABASE_", "DATABASE", "REDIS"))]


@pytest.fixture(scope="module", autouse=True)
def _signing_key_file() -> Iterator[None]:
    signing_key_ensure(SIGNING_KEY_PATH)
    yield
    SIGNING_KEY_PATH.unlink(missing_ok=True)


def gone_pid() -> int:
    """The pid of a process that has exited (a launcher killed without cleaning up)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_file_is_read_back_with_the_values_written_and_only_its_owner_can_read_it(tmp_path):
    path = devstack_settings_write(directory=tmp_path, values=STACK, pid=os.getpid())
    assert path == tmp_path / "settings.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert devstack_settings_read(tmp_path) == STACK
    assert devstack_settings_owner(tmp_path) == os.getpid()
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]  # no partial file left


def test_without_a_file_there_are_no_settings(tmp_path):
    assert devstack_settings_read(tmp_path) == {}
    assert devstack_settings_owner(tmp_path) is None


def test_the_file_of_a_launcher_that_is_gone_is_ignored(tmp_path):
    devstack_settings_write(directory=tmp_path, values=STACK, pid=gone_pid())
    assert devstack_settings_read(tmp_path) == {}
    assert devstack_settings_owner(tmp_path) is None


def test_only_the_shared_settings_are_written_or_read(tmp_path):
    with pytest.raises(ValueError, match="DJANGO_SECRET_KEY"):
        devstack_settings_write(
            directory=tmp_path, values={"DJANGO_SECRET_KEY": "x"}, pid=os.getpid()
        )
    devstack_settings_path(tmp_path).write_text(
        json.dumps({"pid": os.getpid(), "settings": {"DJANGO_DEBUG": "0", "REDIS_URL": "r"}})
    )
    assert devstack_settings_read(tmp_path) == {"REDIS_URL": "r"}


@pytest.mark.parametrize("text", ["", "{", "[]", '{"pid": "1", "settings": {}}', '{"pid": 1}'])
def test_a_file_that_is_not_a_settings_file_is_an_error_that_names_it(tmp_path, text):
    devstack_settings_path(tmp_path).write_text(text)
    with pytest.raises(DevstackSettingsError, match=r"settings\.json is not a dev stack"):
        devstack_settings_read(tmp_path)


def test_a_launcher_removes_only_its_own_file(tmp_path):
    devstack_settings_write(directory=tmp_path, values=STACK, pid=os.getpid())
    devstack_settings_remove(directory=tmp_path, pid=os.getpid() + 1)
    assert devstack_settings_path(tmp_path).exists()
    devstack_settings_remove(directory=tmp_path, pid=os.getpid())
    assert not devstack_settings_path(tmp_path).exists()


# --- manage.py in a checkout with a running stack (real subprocesses) ----------------------

PRINT_SETTINGS = (
    "from django.conf import settings as s; import json; print(json.dumps({"
    "'DATABASE_URL': s.DATABASES['default']['NAME'], 'REDIS_URL': s.REDIS_URL, "
    "'SUPABASE_URL': s.SUPABASE_URL, 'SUPABASE_PUBLISHABLE_KEY': s.SUPABASE_PUBLISHABLE_KEY, "
    "'SUPABASE_SECRET_KEY': s.SUPABASE_SECRET_KEY, "
    "'SUPABASE_JWT_SIGNING_KEY': s.SUPABASE_JWT_SIGNING_KEY}))"
)


def manage(devstack_dir: Path, *args: str, settings_module: str | None = None, **env: str):
    """Run manage.py as a user would in another shell: none of the stack's variables set."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if name not in STACK and name != "DJANGO_SETTINGS_MODULE"
    }
    clean["DEVSTACK_DIR"] = str(devstack_dir)
    if settings_module:
        clean["DJANGO_SETTINGS_MODULE"] = settings_module
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def shown_settings(completed) -> dict[str, str]:
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture
def running_stack(tmp_path) -> Path:
    """A settings file as a running launcher (this test process) leaves it."""
    devstack_settings_write(directory=tmp_path, values=STACK, pid=os.getpid())
    return tmp_path


def test_manage_py_check_with_a_running_stack_reports_no_supabase_warning_or_error(
    running_stack,
):
    checked = manage(running_stack, "check")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "System check identified no issues (0 silenced)."
    assert "events." not in checked.stderr
    # The same check without the file is what a user saw before: the warning.
    devstack_settings_path(running_stack).unlink()
    unconfigured = manage(running_stack, "check")
    assert "events.W001" in unconfigured.stdout + unconfigured.stderr


def test_manage_py_takes_the_stacks_settings_and_exported_variables_win(running_stack):
    shown = manage(running_stack, "shell", "-c", PRINT_SETTINGS)
    assert shown.returncode == 0, shown.stderr
    values = shown_settings(shown)
    assert values == {
        **{name: STACK[name] for name in SHARED_NAMES},
        "DATABASE_URL": "devstack_settings_probe",
    }

    exported = manage(
        running_stack, "shell", "-c", PRINT_SETTINGS, SUPABASE_URL="https://example.supabase.co"
    )
    assert shown_settings(exported)["SUPABASE_URL"] == "https://example.supabase.co"
    assert shown_settings(exported)["REDIS_URL"] == STACK["REDIS_URL"]


def test_test_settings_never_read_the_stacks_file(running_stack):
    shown = manage(
        running_stack,
        "shell",
        "-c",
        PRINT_SETTINGS,
        settings_module="monitor_project.settings.test",
    )
    assert shown.returncode == 0, shown.stderr
    values = shown_settings(shown)
    assert values["SUPABASE_URL"] == "" and values["DATABASE_URL"] == "monitor"


def test_production_settings_never_read_the_stacks_file(running_stack):
    refused = manage(
        running_stack,
        "check",
        settings_module="monitor_project.settings.production",
        DJANGO_SECRET_KEY="x" * 50,
        DJANGO_ALLOWED_HOSTS="monitor.example",
    )
    assert refused.returncode != 0
    assert "DATABASE_URL must be set in production" in refused.stderr


def test_a_stale_file_leaves_manage_py_on_its_defaults(tmp_path):
    devstack_settings_write(directory=tmp_path, values=STACK, pid=gone_pid())
    shown = manage(tmp_path, "shell", "-c", PRINT_SETTINGS)
    assert shown_settings(shown)["SUPABASE_URL"] == ""
