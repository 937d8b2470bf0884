"""Sticky percentage buckets of the waffle flag model."""

from decimal import Decimal

import pytest
from django.contrib.sessions.backends.db import SessionStore
from waffle import flag_is_active

from rollout import services
from rollout.buckets import BUCKET_COUNT, in_percentage, user_bucket
from rollout.models import Flag
from tests.rollout.factories import analysis_passing


def test_a_users_bucket_is_the_same_every_time():
    assert user_bucket(flag_name="f", user_id=42) == user_bucket(flag_name="f", user_id="42")
    assert 0 <= user_bucket(flag_name="f", user_id=42) < BUCKET_COUNT


def test_raising_the_percentage_only_adds_users():
    at_10 = {u for u in range(5000) if in_percentage(flag_name="f", user_id=u, percent=10)}
    at_50 = {u for u in range(5000) if in_percentage(flag_name="f", user_id=u, percent=50)}
    assert at_10 < at_50


@pytest.mark.django_db
def test_the_flag_model_decides_without_a_request():
    # The data migration creates the flag at 0 %.
    flag = Flag.objects.get(name="supabase_realtime")
    assert flag.percent == 0
    flag.percent = Decimal("100.0")
    assert all(flag.is_active_for_user_id(u) for u in range(100))
    flag.percent = Decimal("0")
    assert not any(flag.is_active_for_user_id(u) for u in range(100))


@pytest.mark.django_db
def test_waffle_decides_by_the_sticky_bucket_on_every_request(rf, django_user_model):
    analysis_passing()  # the stage in force passed its analysis
    services.rollout_stage_set(stage="50", actor=None, reason="test")
    flag = Flag.objects.get(name="supabase_realtime")
    users = [django_user_model.objects.create_user(username=f"w{n}") for n in range(60)]
    try:
        for user in users:
            answers = set()
            for _ in range(3):  # three requests, as from three devices or sessions
                request = rf.get("/")
                request.user = user
                request.session = SessionStore()
                answers.add(flag_is_active(request, "supabase_realtime"))
            assert answers == {flag.is_active_for_user_id(user.pk)}
    finally:
        # waffle caches flags in the shared cache and the test's rollback fires no
        # signal: forget the 50 % version.
        flag.flush()
    assert 0 < sum(flag.is_active_for_user_id(u.pk) for u in users) < len(users)
