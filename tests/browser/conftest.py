"""A real browser (Debian's Chromium, driven by Playwright) against a real stack.

The stack is daphne and a Celery worker as separate processes on the test database and
test Redis, supabase_local from the session fixture, and this process publishing events.
Playwright's sync API runs an event loop in this thread, so Django's guard against ORM
calls from async code is lifted for these tests (the calls really are synchronous).
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from tests.fixtures.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.fixtures.django_processes import (
    celery_worker_argv,
    daphne_argv,
    free_port,
    http_answers_ok,
    process_environment,
    running_process,
    wait_until,
)
from tests.fixtures.supabase_settings import (
    SUPABASE_KEY_SETTINGS,
    supabase_product_settings,
    supabase_settings_apply,
)

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class Stack:
    base_url: str


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker, supabase_local, tmp_path_factory) -> Iterator[Stack]:
    saved = {name: getattr(settings, name) for name in SUPABASE_KEY_SETTINGS}
    supabase_settings_apply(settings, supabase_product_settings(supabase_local))  # new keys
    logs = tmp_path_factory.mktemp("stack")
    port = free_port()
    with django_db_blocker.unblock():
        env = process_environment()
    daphne = daphne_argv(port)
    try:
        with (
            running_process(daphne, env=env, log_path=logs / "daphne.log"),
            running_process(celery_worker_argv(), env=env, log_path=logs / "worker.log"),
        ):
            base_url = f"http://127.0.0.1:{port}"
            wait_until(lambda: http_answers_ok(f"{base_url}/healthz"), timeout=60, what="daphne")
            yield Stack(base_url=base_url)
    finally:
        for name, value in saved.items():
            setattr(settings, name, value)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM} (make test installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def open_dashboard(request, stack, browser, supabase_local):
    """Open the dashboard signed in as ``user``; returns (page, context)."""
    # Each test's local log starts again at seq 1, so the Supabase copy must too.
    supabase_local.truncate()
    contexts = []

    def open_as(user):
        client = Client()
        client.force_login(user)
        context = browser.new_context(
            base_url=stack.base_url, viewport={"width": 1400, "height": 900}
        )
        context.add_cookies(
            [
                {
                    "name": settings.SESSION_COOKIE_NAME,
                    "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                    "url": stack.base_url,
                }
            ]
        )
        contexts.append(context)
        page = context.new_page()
        page.goto("/")
        return page, context

    yield open_as
    for context in contexts:
        context.close()
    supabase_local.assert_left_behind_nothing(request.node.nodeid)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path
