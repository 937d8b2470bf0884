"""Sticky percentage buckets of the waffle flag model."""

from decimal import Decimal

import pytest

from rollout.buckets import BUCKET_COUNT, in_percentage, user_bucket
from rollout.models import Flag


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
