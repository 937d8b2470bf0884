"""The fault suite's stack and the summary it adds to every test run's output."""

from collections.abc import Iterator

import pytest

from events import services
from tests.reliability.harness import FaultStack, Scenario

FAULT_REPORTS: list[tuple[str, list[str]]] = []


@pytest.fixture
def scenario(request, django_supabase, django_user_model, tmp_path) -> Iterator[Scenario]:
    users = [
        django_user_model.objects.create_user(username=f"follower-{n}", password="pw-follower-1")
        for n in range(4)
    ]
    token = services.producer_create(name="steady-producer").token
    scenario = Scenario(
        stack=FaultStack(tmp_path), supabase=django_supabase, producer_token=token, users=users
    )
    try:
        yield scenario
    finally:
        scenario.close()
        django_supabase.clear_faults()
        FAULT_REPORTS.append((request.node.name, scenario.report))


def pytest_terminal_summary(terminalreporter) -> None:
    """Each fault test's injections and counts, also when it passed (no ``-s`` needed)."""
    if not FAULT_REPORTS:
        return
    terminalreporter.section("fault suite: what was injected and counted")
    for name, lines in FAULT_REPORTS:
        terminalreporter.write_line(name)
        for line in lines:
            terminalreporter.write_line(f"  {line}")
