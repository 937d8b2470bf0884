"""Dashboard pages."""

import logging

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render

from events import selectors, supabase_client
from rollout.selectors import rollout_state_get, user_transport, user_transport_choice

DASHBOARD_INITIAL_EVENTS = 200
REALTIME_TOKEN_SECONDS = 15 * 60
# What end users read while the kill switch is on; staff read the reason staff gave.
KILL_SWITCH_NOTICE = (
    "Live updates are running on the standard connection for now, while we check a "
    "problem with the new one. Nothing is lost: every event still arrives."
)

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


def rollout_notice_for(user) -> dict:
    """What the page says about the rollout: whether the kill switch is on and, for staff,
    why (end users get a plain-language message, never the staff reason)."""
    state = rollout_state_get()
    notice = {
        "killed": state.killed,
        "message": "",
        "reason": "",
        "plainKillMessage": KILL_SWITCH_NOTICE,
    }
    if state.killed and user.is_staff:
        notice["reason"] = state.kill_reason
        notice["message"] = (
            f"Kill switch on: everyone is on the legacy WebSocket feed ({state.kill_reason})."
        )
    elif state.killed:
        notice["message"] = KILL_SWITCH_NOTICE
    return notice


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    wants_synthetic = request.GET.get("synthetic") == "show"
    show_synthetic = selectors.viewer_sees_synthetic(request.user, requested=wants_synthetic)
    if wants_synthetic and not show_synthetic:
        raise PermissionDenied("Only staff can show synthetic events.")
    latest_seq = selectors.event_latest_seq()
    events = [
        event
        for event in selectors.events_latest(
            limit=DASHBOARD_INITIAL_EVENTS, include_synthetic=show_synthetic
        )
        if event.seq <= latest_seq
    ]
    token = realtime_token_for(request.user)
    supabase = None
    if token is not None:
        supabase = {
            "url": settings.SUPABASE_URL,
            # The publishable key (the legacy anon key while a project still uses it):
            # public by design, RLS guards the data and the private topics.
            "publishableKey": supabase_client.browser_key(),
            "token": token["access_token"],
            "expiresAt": token["expires_at"],
            "eventsTopic": supabase_client.EVENTS_TOPIC,
            "controlTopic": supabase_client.CONTROL_TOPIC,
        }
    rollout = rollout_notice_for(request.user)
    config = {
        "userId": request.user.pk,
        "staff": request.user.is_staff,
        "transport": user_transport(request.user),
        "choice": user_transport_choice(request.user),
        "rollout": rollout,
        "csrfToken": get_token(request),
        "latestSeq": latest_seq,
        "initialEvents": [selectors.event_to_wire(event) for event in events],
        # The initial events are every event the page shows with after < seq <= latestSeq.
        "initialAfter": (events[-1].seq - 1 if len(events) == DASHBOARD_INITIAL_EVENTS else 0),
        "synthetic": {
            "show": show_synthetic,
            "types": sorted(selectors.SYNTHETIC_EVENT_TYPES),
        },
        "rate": selectors.events_per_minute(up_to_seq=latest_seq, include_synthetic=show_synthetic),
        "supabase": supabase,
    }
    return render(
        request,
        "events/dashboard.html",
        {
            "dashboard_config": config,
            "transport": config["transport"],
            "rollout": rollout,
            "show_synthetic": show_synthetic,
        },
    )
