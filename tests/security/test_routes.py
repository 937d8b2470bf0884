"""Every URL and WebSocket route against every kind of caller, with the intended answer.

Callers: ``anonymous``; ``signed_in`` (an ordinary user); ``staff`` (``is_staff`` and no
model permissions: what the rollout panel asks for); ``superuser`` (staff with every
permission: shows the admin pages work); ``producer`` (``Authorization: Bearer`` with a
producer token and no session).

The table is checked against ``get_resolver()``: a URL pattern without an entry here,
or an entry whose pattern no longer exists, fails ``test_every_route_is_in_the_table``.
Admin model pages come from ``admin.site._registry``; each registered model must be
listed in ``ADMIN_MODELS`` with the pages it offers.
"""

import json
from dataclasses import dataclass, field

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib import admin
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from events import services
from monitor_project.asgi import application

CALLERS = ("anonymous", "signed_in", "staff", "superuser", "producer")

# Expected answers: a status, or (302, where the Location must start).
LOGIN = (302, "/accounts/login/")
ADMIN_LOGIN = (302, "/admin/login/")
ADMIN_INDEX = (302, "/admin/")
PANEL = (302, "/admin/rollout/panel/")
RUNS_LIST = (302, "/admin/reconciliation/reconciliationrun/")
JSON_401 = "401json"  # 401 with a JSON error body
JSON_403 = "403json"  # 403 with a JSON error body


def answers(anonymous, signed_in, staff, producer, superuser=None) -> dict:
    return {
        "anonymous": anonymous,
        "signed_in": signed_in,
        "staff": staff,
        "superuser": staff if superuser is None else superuser,
        "producer": producer,
    }


def everyone(expected) -> dict:
    return answers(expected, expected, expected, expected)


@dataclass(frozen=True)
class Case:
    pattern: str  # the resolver's pattern string, as get_resolver() spells it
    method: str
    path: str
    expect: dict
    data: dict | None = field(default=None)
    json_body: bool = False
    supabase: bool = False  # needs Supabase configured (django_supabase)

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


EVENT = {"event_type": "tool.call", "source": "route-table", "payload": {}}
TELEMETRY = {"transport": "websocket", "connects": 1}
STAFF_ONLY = answers(403, 403, 200, 403)

SITE_CASES = [
    Case("healthz", "GET", "/healthz", everyone(200)),
    Case("readyz", "GET", "/readyz", everyone(200)),
    Case("accounts/login/", "GET", "/accounts/login/", everyone(200)),
    Case("accounts/logout/", "POST", "/accounts/logout/", everyone((302, "/accounts/login/"))),
    Case("", "GET", "/", answers(LOGIN, 200, 200, LOGIN)),
    Case("api/events", "GET", "/api/events", answers(JSON_401, 200, 200, 200)),
    # A session alone cannot ingest: POST is token-only.
    Case(
        "api/events",
        "POST",
        "/api/events",
        answers(JSON_401, JSON_401, JSON_401, 201),
        data=EVENT,
        json_body=True,
    ),  # fmt: skip
    Case("metrics", "GET", "/metrics", answers(JSON_401, JSON_403, 200, JSON_401)),
    Case(
        "api/realtime-token",
        "GET",
        "/api/realtime-token",
        answers(JSON_401, 200, 200, JSON_401),
        supabase=True,
    ),  # fmt: skip
    Case("settings/", "GET", "/settings/", answers(LOGIN, 200, 200, LOGIN)),
    Case(
        "settings/",
        "POST",
        "/settings/",
        answers(LOGIN, (302, "/settings/"), (302, "/settings/"), LOGIN),
        data={"transport": "websocket"},
    ),  # fmt: skip
    Case("api/time", "GET", "/api/time", everyone(200)),
    Case("api/transport", "GET", "/api/transport", answers(JSON_401, 200, 200, JSON_401)),
    Case(
        "api/telemetry",
        "POST",
        "/api/telemetry",
        answers(JSON_401, 202, 202, JSON_401),
        data=TELEMETRY,
        json_body=True,
    ),  # fmt: skip
    # The rollout panel: 403 (not the admin's login redirect) to anyone but active staff.
    Case("admin/rollout/panel/", "GET", "/admin/rollout/panel/", STAFF_ONLY),
    Case("admin/rollout/panel/health.json", "GET", "/admin/rollout/panel/health.json", STAFF_ONLY),
    # The rollout report (and its print view and exports): staff only, reads only.
    Case("admin/rollout/report/", "GET", "/admin/rollout/report/", STAFF_ONLY),
    # Without ``confirm=yes`` the action only renders its confirmation page; even that
    # needs the action's permission (rollout.operate_kill_switch), which superusers hold.
    Case(
        "admin/rollout/panel/action/",
        "POST",
        "/admin/rollout/panel/action/",
        answers(403, 403, 403, 403, superuser=200),
        data={"action": "kill", "reason": "route table"},
    ),  # fmt: skip
    Case(
        "admin/rollout/panel/alerts/<int:alert_id>/acknowledge/",
        "POST",
        "/admin/rollout/panel/alerts/999999/acknowledge/",
        answers(403, 403, 404, 403),
    ),  # fmt: skip
    # Queues a reconciliation run: needs reconciliation.run_reconciliation (superusers).
    Case(
        "admin/reconciliation/reconciliationrun/run-now/",
        "POST",
        "/admin/reconciliation/reconciliationrun/run-now/",
        answers(ADMIN_LOGIN, ADMIN_LOGIN, 403, ADMIN_LOGIN, superuser=RUNS_LIST),
    ),  # fmt: skip
    # The admin site itself.
    Case("admin/", "GET", "/admin/", answers(ADMIN_LOGIN, ADMIN_LOGIN, 200, ADMIN_LOGIN)),
    Case("admin/login/", "GET", "/admin/login/", answers(200, 200, ADMIN_INDEX, 200)),
    # Staff are signed out (to LOGOUT_REDIRECT_URL); the rest are sent to the admin index.
    Case(
        "admin/logout/",
        "POST",
        "/admin/logout/",
        answers(ADMIN_INDEX, ADMIN_INDEX, LOGIN, ADMIN_INDEX),
    ),  # fmt: skip
    Case(
        "admin/password_change/",
        "GET",
        "/admin/password_change/",
        answers(ADMIN_LOGIN, ADMIN_LOGIN, 200, ADMIN_LOGIN),
    ),  # fmt: skip
    Case(
        "admin/password_change/done/",
        "GET",
        "/admin/password_change/done/",
        answers(ADMIN_LOGIN, ADMIN_LOGIN, 200, ADMIN_LOGIN),
    ),  # fmt: skip
    Case(
        "admin/autocomplete/",
        "GET",
        "/admin/autocomplete/",
        answers(ADMIN_LOGIN, ADMIN_LOGIN, 403, ADMIN_LOGIN),
    ),  # fmt: skip
    Case(
        "admin/jsi18n/",
        "GET",
        "/admin/jsi18n/",
        answers(ADMIN_LOGIN, ADMIN_LOGIN, 200, ADMIN_LOGIN),
    ),  # fmt: skip
    Case(
        "admin/r/<path:content_type_id>/<path:object_id>/",
        "GET",
        "/admin/r/999999/1/",
        answers(ADMIN_LOGIN, ADMIN_LOGIN, 404, ADMIN_LOGIN),
    ),  # fmt: skip
    Case(
        "admin/auth/user/<id>/password/",
        "GET",
        "/admin/auth/user/999999/password/",
        answers(ADMIN_LOGIN, ADMIN_LOGIN, 403, ADMIN_LOGIN, superuser=404),
    ),  # fmt: skip
    Case(
        "admin/(?P<url>.*)$",
        "GET",
        "/admin/no-such-page/",
        answers(ADMIN_LOGIN, ADMIN_LOGIN, 404, ADMIN_LOGIN),
    ),  # fmt: skip
]

APP_LIST_NAME = "app_list"  # its regex lists the registered app labels; matched by name

# Models whose admin refuses deletion to everyone (history is kept).
NO_DELETE = {
    "events.event", "rollout.rolloutstate", "rollout.thresholds", "rollout.auditentry",
    "rollout.stageanalysis", "rollout.forcedpromotionrequest",  # evidence, kept
}  # fmt: skip

# Every model in the admin, with whether a superuser may add one. A model registered
# without an entry here fails test_every_admin_model_is_in_the_table.
ADMIN_MODELS = {
    "auth.group": True,
    "auth.user": True,
    "waffle.sample": True,
    "waffle.switch": True,
    "django_celery_beat.periodictask": True,
    "django_celery_beat.clockedschedule": True,
    "django_celery_beat.crontabschedule": True,
    "django_celery_beat.solarschedule": True,
    "django_celery_beat.intervalschedule": True,
    "events.producer": True,
    "events.event": False,
    "events.delivery": False,
    "events.classificationrule": True,
    "events.route": True,
    "events.breakerstatechange": False,
    "rollout.flag": True,
    "rollout.rolloutstate": False,
    "rollout.thresholds": False,  # one row, seeded by a migration
    "rollout.auditentry": False,
    "rollout.alert": False,
    "rollout.transportpreference": False,
    "rollout.healthsample": False,
    "rollout.stageanalysis": False,  # recorded by the system
    "rollout.forcedpromotionrequest": False,  # made and decided on the panel
    "reconciliation.reconciliationrun": False,
    "reconciliation.discrepancy": False,
    "axes.accessattempt": False,  # sign-in lockouts, recorded by django-axes
}


def registered_models() -> list[str]:
    return sorted(f"{m._meta.app_label}.{m._meta.model_name}" for m in admin.site._registry)


def admin_model_cases() -> list[Case]:
    cases = [
        Case(
            "admin/^(?P<app_label>" + "|".join(_app_labels()) + ")/$",
            "GET",
            "/admin/events/",
            answers(ADMIN_LOGIN, ADMIN_LOGIN, 404, ADMIN_LOGIN, superuser=200),
        )
    ]
    out = (ADMIN_LOGIN, ADMIN_LOGIN)
    for label in registered_models():
        app, model = label.split(".")
        base = f"admin/{app}/{model}/"
        can_add = ADMIN_MODELS.get(label, False)
        changelist = PANEL if label == "rollout.rolloutstate" else 200
        staff_changelist = PANEL if label == "rollout.rolloutstate" else 403
        cases += [
            Case(base, "GET", f"/{base}", answers(*out, staff_changelist, out[0], changelist)),
            Case(
                f"{base}add/",
                "GET",
                f"/{base}add/",
                answers(*out, 403, out[0], 200 if can_add else 403),
            ),  # fmt: skip
            # Object pages, for an object that does not exist.
            Case(
                f"{base}<path:object_id>/history/",
                "GET",
                f"/{base}0/history/",
                answers(*out, ADMIN_INDEX, out[0], ADMIN_INDEX),
            ),  # fmt: skip
            Case(
                f"{base}<path:object_id>/delete/",
                "GET",
                f"/{base}0/delete/",
                answers(*out, 403, out[0], 403 if label in NO_DELETE else ADMIN_INDEX),
            ),  # fmt: skip
            Case(
                f"{base}<path:object_id>/change/",
                "GET",
                f"/{base}0/change/",
                answers(*out, 403, out[0], ADMIN_INDEX),
            ),  # fmt: skip
            Case(
                f"{base}<path:object_id>/",
                "GET",
                f"/{base}0/",
                answers(*out, (302, f"/{base}0/change/"), out[0], (302, f"/{base}0/change/")),
            ),  # fmt: skip
        ]
    return cases


def _app_labels() -> list[str]:
    labels: list[str] = []
    for model in admin.site._registry:
        if model._meta.app_label not in labels:
            labels.append(model._meta.app_label)
    return labels


CASES = SITE_CASES + admin_model_cases()


def resolver_patterns(patterns=None, prefix: str = "") -> list[tuple[str, str | None]]:
    """Every (pattern string, name) the project's URLconf answers."""
    found = []
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            found += resolver_patterns(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            found.append((prefix + str(entry.pattern), entry.name))
    return found


def test_every_route_is_in_the_table():
    in_table = {case.pattern for case in CASES}
    routes = {pattern for pattern, _ in resolver_patterns()}
    assert sorted(routes - in_table) == [], "routes without an expected answer"
    assert sorted(in_table - routes) == [], "table entries for routes that no longer exist"
    names = {name for _, name in resolver_patterns()}
    assert APP_LIST_NAME in names


def test_every_admin_model_is_in_the_table():
    assert sorted(set(registered_models()) ^ set(ADMIN_MODELS)) == []


# --- the callers -------------------------------------------------------------------------


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser(username="root", password="pw-for-tests-3")


def caller_client(kind: str, request) -> Client:
    if kind == "anonymous":
        return Client()
    if kind == "producer":
        token = services.producer_create(name="route-table").token
        return Client(headers={"Authorization": f"Bearer {token}"})
    fixture = {"signed_in": "user", "staff": "staff_user", "superuser": "superuser"}[kind]
    client = Client()
    client.force_login(request.getfixturevalue(fixture))
    return client


def case_send(client: Client, case: Case):
    """Make the case's request (its method, path and body) as ``client``."""
    kwargs = {}
    if case.data is not None:
        kwargs["data"] = json.dumps(case.data) if case.json_body else case.data
        if case.json_body:
            kwargs["content_type"] = "application/json"
    return getattr(client, case.method.lower())(case.path, **kwargs)


def check(response, expected) -> None:
    where = f"{response.request['REQUEST_METHOD']} {response.request['PATH_INFO']}"
    if expected == JSON_401:
        assert response.status_code == 401, where
        assert response["Content-Type"] == "application/json", where
        assert response.json()["error"]["code"] == "unauthorized", where
    elif expected == JSON_403:
        assert response.status_code == 403, where
        assert response["Content-Type"] == "application/json", where
        assert response.json()["error"]["code"] == "forbidden", where
    elif isinstance(expected, tuple):
        status, location = expected
        assert response.status_code == status, where
        target = response["Location"]
        assert target == location or target.startswith(location + "?"), (where, target)
    else:
        assert response.status_code == expected, where


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_route_answers_each_caller_as_intended(case: Case, caller: str, request):
    if case.supabase:
        request.getfixturevalue("django_supabase")
    response = case_send(caller_client(caller, request), case)
    check(response, case.expect[caller])


# --- the WebSocket route -----------------------------------------------------------------

WS_ORIGIN = b"http://127.0.0.1:8000"
WS_EXPECT = {"anonymous": False, "signed_in": True, "staff": True, "superuser": True}


def test_the_websocket_route_is_in_the_table():
    from events.routing import websocket_urlpatterns

    assert [str(p.pattern) for p in websocket_urlpatterns] == ["ws/events/"]


async def ws_connect(*, session_user=None, origin=WS_ORIGIN, extra_headers=()) -> bool:
    headers = [(b"origin", origin), (b"host", b"127.0.0.1:8000"), *extra_headers]
    if session_user is not None:
        client = Client()
        await sync_to_async(client.force_login)(session_user)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/events/", headers=headers)
    connected, _ = await communicator.connect(timeout=10)
    if connected:
        await communicator.disconnect()
    return connected


@pytest.mark.timeout(60)
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("caller", CALLERS)
async def test_the_websocket_feed_answers_each_caller_as_intended(
    caller: str, user, staff_user, superuser
):
    if caller == "producer":
        token = await sync_to_async(services.producer_create)(name="ws-producer")
        auth = (b"authorization", f"Bearer {token.token}".encode())
        assert await ws_connect(extra_headers=[auth]) is False
        return
    session_user = {"anonymous": None, "signed_in": user, "staff": staff_user,
                    "superuser": superuser}[caller]  # fmt: skip
    assert await ws_connect(session_user=session_user) is WS_EXPECT[caller]


@pytest.mark.timeout(60)
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "origin", [b"http://evil.example", b"null", b"http://127.0.0.1.evil.example:8000"]
)
async def test_the_websocket_feed_refuses_a_foreign_origin_even_when_signed_in(origin, staff_user):
    assert await ws_connect(session_user=staff_user, origin=origin) is False
