"""Dashboard pages."""

import logging

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render

from events import selectors, supabase_client
from rollout.selectors import user_transport

DASHBOARD_INITIAL_EVENTS = 200
REALTIME_TOKEN_SECONDS = 15 * 60

logger = logging.getLogger(__name__)


def realtime_token_for(user) -> dict | None:
    """A short-lived Supabase token for this user, or None when Supabase is not set up, or
    its signing key cannot sign (logged; ``manage.py check`` reports it as events.E005):
    the page then stays on the legacy path rather than failing."""
    if not supabase_client.user_tokens_available():
        return None
    try:
        token, expires_at = supabase_client.user_access_token_issue(
            user_id=user.pk, expires_in=REALTIME_TOKEN_SECONDS
        )
    except ImproperlyConfigured as error:  # the message names the setting, never the key
        logger.error("cannot mint Supabase user tokens: %s", error)
        return None
    return {"access_token": token, "expires_at": expires_at}


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    events = selectors.events_latest(limit=DASHBOARD_INITIAL_EVENTS)
    latest_seq = events[0].seq if events else selectors.event_latest_seq()
    token = realtime_token_for(request.user)
    supabase = None
    if token is not None:
        supabase = {
            "url": settings.SUPABASE_URL,
            # The publishable key (the legacy anon key while a project still uses it):
            # public by design, RLS guards the data. The bundle reads it as ``anonKey``.
            "anonKey": supabase_client.browser_key(),
            "token": token["access_token"],
            "expiresAt": token["expires_at"],
            "controlTopic": supabase_client.CONTROL_TOPIC,
        }
    config = {
        "userId": request.user.pk,
        "transport": user_transport(request.user),
        "csrfToken": get_token(request),
        "latestSeq": latest_seq,
        "initialEvents": [selectors.event_to_wire(event) for event in events],
        "supabase": supabase,
    }
    return render(
        request,
        "events/dashboard.html",
        {"dashboard_config": config, "transport": config["transport"]},
    )
