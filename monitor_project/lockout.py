"""What a locked-out sign-in gets (``AXES_LOCKOUT_CALLABLE``; django-axes decides when).

After ``AXES_FAILURE_LIMIT`` wrong passwords for one username from one address, axes
refuses that username from that address, even with the right password, until the
cool-off has passed since the last attempt (an attempt during the lockout restarts it).
The answer is 429 with ``Retry-After`` and a page saying when to try again, for the
site's sign-in page and the admin's alike.
"""

from __future__ import annotations

import math
from datetime import timedelta

from axes.helpers import get_cool_off
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone


def cool_off(request: HttpRequest | None = None) -> timedelta:
    """``AXES_COOLOFF_TIME``: how long a locked pair stays locked after its last attempt."""
    return timedelta(minutes=settings.LOGIN_LOCKOUT_MINUTES)


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials=None
) -> HttpResponse:
    cool_off = get_cool_off(request) or timedelta(0)
    seconds = max(math.ceil(cool_off.total_seconds()), 1)
    response = render(
        request,
        "registration/locked_out.html",
        {
            "minutes": math.ceil(seconds / 60),
            "retry_at": timezone.now() + cool_off,
            "login_path": request.path,
        },
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response
