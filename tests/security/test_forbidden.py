"""A refused request: a 403 page in the site's look saying why (JSON on the API paths),
and one log line without a traceback."""

import logging

import pytest
from django.core.exceptions import PermissionDenied
from django.test import RequestFactory
from django.utils.log import AdminEmailHandler

from monitor_project.errors import permission_denied

pytestmark = pytest.mark.django_db

PANEL = "/admin/rollout/panel/"


def test_a_non_staff_user_on_a_staff_page_gets_the_sites_403_page(signed_in_client):
    response = signed_in_client.get(PANEL)

    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/html")
    body = response.content.decode()
    assert 'class="topbar"' in body and "events/monitor.css" in body  # the site's look
    assert "Not allowed" in body
    assert "The rollout panel is for staff accounts." in body
    assert "signed in as <strong>ada</strong>, which is not a staff account" in body
    assert 'href="/"' in body  # a way back


def test_an_anonymous_caller_is_offered_the_sign_in_page(client):
    body = client.get(PANEL).content.decode()
    assert "Not allowed" in body
    assert 'href="/accounts/login/?next=/admin/rollout/panel/"' in body


def test_staff_without_the_permission_are_told_which_one_they_need(client, staff_user):
    client.force_login(staff_user)
    response = client.post("/admin/rollout/panel/action/", {"action": "kill", "reason": "r"})
    assert response.status_code == 403
    assert "rollout.operate_kill_switch" in response.content.decode()


def test_on_an_api_path_a_refusal_is_a_json_error():
    request = RequestFactory().get("/api/transport")
    response = permission_denied(request, PermissionDenied("staff only"))
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert b'"code": "forbidden"' in response.content and b"staff only" in response.content


def test_a_refusal_is_logged_once_as_one_line_without_a_traceback(signed_in_client, caplog):
    caplog.set_level(logging.DEBUG)

    signed_in_client.get(PANEL)

    records = [r for r in caplog.records if r.name == "django.request"]
    assert [r.getMessage() for r in records] == [f"Forbidden (Permission denied): {PANEL}"]
    assert records[0].exc_info is None and records[0].exc_text is None
    assert "Traceback" not in caplog.text


def test_a_server_error_keeps_its_traceback(caplog):
    caplog.set_level(logging.DEBUG)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("django.request").exception("Internal Server Error: /x")
    assert caplog.records[-1].exc_info is not None and "Traceback" in caplog.text


def test_django_records_reach_the_console_through_the_root_logger_only():
    # Django's default logging adds a console handler of its own to "django", which
    # printed every request warning (and its traceback) twice with DEBUG on.
    handlers = logging.getLogger("django").handlers
    assert [type(handler) for handler in handlers] == [AdminEmailHandler]
    assert logging.getLogger("django").propagate
