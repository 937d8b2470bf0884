"""Sign-in throttling (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords for one
username from one address, that pair is refused, even with the right password, with a
429 saying when to retry; other users are not affected; an operator can unlock."""

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db

ADA = {"username": "ada", "password": "pw-for-tests-1"}  # the ``user`` fixture
GRACE = {"username": "grace", "password": "pw-for-tests-2"}  # the ``staff_user`` fixture
FORMS = ["/accounts/login/", "/admin/login/"]


def sign_in(client: Client, path: str, credentials: dict, *, password: str | None = None):
    data = {**credentials, **({"password": password} if password is not None else {})}
    return client.post(path, {**data, "next": "/admin/" if "admin" in path else "/"})


def signed_in(client: Client) -> bool:
    return client.get("/api/transport").status_code == 200


def fail_until_locked(client: Client, path: str, credentials: dict) -> list[int]:
    return [
        sign_in(client, path, credentials, password="wrong").status_code
        for _ in range(settings.AXES_FAILURE_LIMIT)
    ]


@pytest.mark.parametrize("path", FORMS)
def test_after_the_limit_even_the_right_password_is_refused_with_when_to_retry(
    path, user, staff_user
):
    client = Client()

    statuses = fail_until_locked(client, path, GRACE)
    response = sign_in(client, path, GRACE)

    assert statuses[:-1] == [200] * (settings.AXES_FAILURE_LIMIT - 1)  # the form again
    assert statuses[-1] == 429  # the attempt that reaches the limit is already refused
    assert response.status_code == 429
    assert response["Retry-After"] == str(settings.LOGIN_LOCKOUT_MINUTES * 60)
    body = response.content.decode()
    assert f"Try again in <strong>{settings.LOGIN_LOCKOUT_MINUTES} minutes</strong>" in body
    assert 'class="topbar"' in body  # the site's page, not a bare message
    assert not signed_in(client)


def test_a_different_user_from_the_same_address_is_not_locked(user, staff_user):
    client = Client()
    fail_until_locked(client, "/accounts/login/", GRACE)

    response = sign_in(client, "/accounts/login/", ADA)

    assert response.status_code == 302 and signed_in(client)


def test_fewer_failures_than_the_limit_then_the_right_password_signs_in_and_resets(user):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(client, "/accounts/login/", ADA, password="wrong")

    assert sign_in(client, "/accounts/login/", ADA).status_code == 302
    assert not AccessAttempt.objects.filter(username="ada").exists()  # typos forgotten


def test_an_operator_unlocks_a_user_with_axes_reset_username(staff_user):
    client = Client()
    fail_until_locked(client, "/admin/login/", GRACE)
    assert sign_in(client, "/admin/login/", GRACE).status_code == 429

    call_command("axes_reset_username", "grace")

    response = sign_in(client, "/admin/login/", GRACE)
    assert response.status_code == 302 and signed_in(client)


def test_the_lockouts_are_listed_in_the_admin_and_deleting_one_unlocks(
    staff_user, django_user_model
):
    client = Client()
    fail_until_locked(client, "/accounts/login/", GRACE)
    root = django_user_model.objects.create_superuser(username="root", password="pw-x-123")
    admin = Client()
    admin.force_login(root)

    listing = admin.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and "grace" in listing.content.decode()
    attempt = AccessAttempt.objects.get(username="grace")
    admin.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})

    assert sign_in(client, "/accounts/login/", GRACE).status_code == 302


def test_force_login_used_by_the_tests_is_not_throttled(client, user):
    # The suite signs in with force_login (no authenticate()); it must keep working
    # after failures for the same user.
    fail_until_locked(Client(), "/accounts/login/", ADA)
    client.force_login(user)
    assert signed_in(client)
