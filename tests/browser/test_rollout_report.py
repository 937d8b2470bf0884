"""The rollout report and its print view in a real browser (Debian's Chromium)."""

import pytest
from django.conf import settings
from django.test import Client

from rollout import services
from tests.browser.conftest import ARTIFACTS, screenshot
from tests.browser.test_dashboard import off_loop
from tests.rollout.factories import analysis_passing

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(240),
]


def _a_rollout(staff_user) -> None:
    """shadow (two passing analyses) → 10 → a rollback by hand → a resume."""
    for supabase_p95 in (42.0, 47.0):
        analysis_passing(transports={
            "supabase": {"prober": {"p95_ms": supabase_p95, "error_rate": 0.0}},
            "websocket": {"prober": {"p95_ms": 40.0, "error_rate": 0.001}},
        })  # fmt: skip
    services.rollout_stage_set(stage="10", actor=staff_user, reason="first cohort")
    services.rollout_kill(actor=staff_user, reason="browser test: drill")
    services.rollout_resume(actor=staff_user, reason="browser test: drill over")


def test_the_report_page_and_its_print_view(stack, browser, staff_user):
    off_loop(_a_rollout, staff_user)
    client = Client()
    client.force_login(staff_user)
    context = browser.new_context(base_url=stack.base_url, viewport={"width": 1400, "height": 900})
    context.add_cookies([{
        "name": settings.SESSION_COOKIE_NAME,
        "value": client.cookies[settings.SESSION_COOKIE_NAME].value, "url": stack.base_url,
    }])  # fmt: skip
    try:
        page = context.new_page()
        page.goto("/admin/rollout/report/")
        # the timeline: both stage runs, the verdicts, the rollback and the resume
        assert page.get_by_test_id("report-run-shadow").is_visible()
        run_10 = page.get_by_test_id("report-run-10")
        assert run_10.is_visible() and "in force" in run_10.inner_text()
        events = page.locator("table.report-events").inner_text()
        assert "browser test: drill" in events and "resume" in events
        # the charts: one line per transport, drawn in the page
        assert page.locator("svg.rollout-chart").count() == 2
        assert page.locator('svg.rollout-chart polyline[data-transport="supabase"]').count() == 2
        screenshot(page, "rollout-report")

        # the print view: no admin chrome, and the link back hidden on paper
        page.get_by_test_id("report-print").click()
        page.wait_for_url("**/admin/rollout/report/?format=print")
        assert page.locator("#header").count() == 0
        assert page.get_by_test_id("report-run-10").is_visible()
        assert page.locator(".screen-only").is_visible()
        page.emulate_media(media="print")
        assert not page.locator(".screen-only").is_visible()
        ARTIFACTS.mkdir(exist_ok=True)
        pdf = page.pdf(path=str(ARTIFACTS / "rollout-report.pdf"), format="A4")
        assert pdf.startswith(b"%PDF")
    finally:
        context.close()
