"""The dev stack launcher's process handling: quiet terminal, full logs, shared settings."""

import io
import os
import sys

import pytest
from rich.console import Console

from monitor_project import devstack
from monitor_project.devstack_settings import devstack_settings_read

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
